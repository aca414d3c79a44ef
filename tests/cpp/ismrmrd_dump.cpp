// Reads every image of an ISMRMRD HDF5 file with the C++ ISMRMRD library (libismrmrd) and writes what
// it sees, for tests/test_cpp_interop.py to compare with Python ismrmrd's view.
//   ismrmrd_dump FILE OUTDIR GROUP...
// OUTDIR/header.xml: the XML header; OUTDIR/images.txt: per image "IMAGE group index", "H field values"
// (floats as C99 hex floats, exact), "A length" (attribute_string_len), "M key<TAB>value<TAB>..." per meta
// key; OUTDIR/data.bin: every image's data bytes, in the same order.
#include <ismrmrd/dataset.h>
#include <ismrmrd/ismrmrd.h>
#include <ismrmrd/meta.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

void ints(FILE *out, const char *name, const uint16_t *v, int n) {
    std::fprintf(out, "H %s", name);
    for (int i = 0; i < n; ++i) std::fprintf(out, " %u", static_cast<unsigned>(v[i]));
    std::fprintf(out, "\n");
}

void uints(FILE *out, const char *name, const uint32_t *v, int n) {
    std::fprintf(out, "H %s", name);
    for (int i = 0; i < n; ++i) std::fprintf(out, " %lu", static_cast<unsigned long>(v[i]));
    std::fprintf(out, "\n");
}

void floats(FILE *out, const char *name, const float *v, int n) {
    std::fprintf(out, "H %s", name);
    for (int i = 0; i < n; ++i) std::fprintf(out, " %a", static_cast<double>(v[i]));
    std::fprintf(out, "\n");
}

void header(FILE *out, const ISMRMRD::ISMRMRD_ImageHeader &h) {
    ints(out, "version", &h.version, 1);
    ints(out, "data_type", &h.data_type, 1);
    std::fprintf(out, "H flags %llu\n", static_cast<unsigned long long>(h.flags));
    uints(out, "measurement_uid", &h.measurement_uid, 1);
    ints(out, "matrix_size", h.matrix_size, 3);
    floats(out, "field_of_view", h.field_of_view, 3);
    ints(out, "channels", &h.channels, 1);
    floats(out, "position", h.position, 3);
    floats(out, "read_dir", h.read_dir, 3);
    floats(out, "phase_dir", h.phase_dir, 3);
    floats(out, "slice_dir", h.slice_dir, 3);
    floats(out, "patient_table_position", h.patient_table_position, 3);
    ints(out, "average", &h.average, 1);
    ints(out, "slice", &h.slice, 1);
    ints(out, "contrast", &h.contrast, 1);
    ints(out, "phase", &h.phase, 1);
    ints(out, "repetition", &h.repetition, 1);
    ints(out, "set", &h.set, 1);
    uints(out, "acquisition_time_stamp", &h.acquisition_time_stamp, 1);
    uints(out, "physiology_time_stamp", h.physiology_time_stamp, ISMRMRD::ISMRMRD_PHYS_STAMPS);
    ints(out, "image_type", &h.image_type, 1);
    ints(out, "image_index", &h.image_index, 1);
    ints(out, "image_series_index", &h.image_series_index, 1);
    std::fprintf(out, "H user_int");
    for (int i = 0; i < ISMRMRD::ISMRMRD_USER_INTS; ++i) std::fprintf(out, " %d", h.user_int[i]);
    std::fprintf(out, "\n");
    floats(out, "user_float", h.user_float, ISMRMRD::ISMRMRD_USER_FLOATS);
    std::fprintf(out, "A %lu\n", static_cast<unsigned long>(h.attribute_string_len));
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s FILE OUTDIR GROUP...\n", argv[0]);
        return 2;
    }
    ISMRMRD::ISMRMRD_Dataset dset;
    if (ISMRMRD::ismrmrd_init_dataset(&dset, argv[1], "/dataset") != ISMRMRD::ISMRMRD_NOERROR ||
        ISMRMRD::ismrmrd_open_dataset(&dset, false) != ISMRMRD::ISMRMRD_NOERROR) {
        std::fprintf(stderr, "cannot open %s\n", argv[1]);
        return 1;
    }
    const std::string dir(argv[2]);
    char *xml = ISMRMRD::ismrmrd_read_header(&dset);
    FILE *xml_out = std::fopen((dir + "/header.xml").c_str(), "wb");
    FILE *text = std::fopen((dir + "/images.txt").c_str(), "w");
    FILE *data = std::fopen((dir + "/data.bin").c_str(), "wb");
    if (!xml_out || !text || !data) {
        std::fprintf(stderr, "cannot write to %s\n", argv[2]);
        return 1;
    }
    if (xml) {
        std::fputs(xml, xml_out);
        std::free(xml);
    }
    int status = 0;
    for (int g = 3; g < argc; ++g) {
        const uint32_t n = ISMRMRD::ismrmrd_get_number_of_images(&dset, argv[g]);
        for (uint32_t i = 0; i < n; ++i) {
            ISMRMRD::ISMRMRD_Image im;
            ISMRMRD::ismrmrd_init_image(&im);
            if (ISMRMRD::ismrmrd_read_image(&dset, argv[g], i, &im) != ISMRMRD::ISMRMRD_NOERROR) {
                std::fprintf(stderr, "cannot read image %u of %s\n", static_cast<unsigned>(i), argv[g]);
                status = 1;
                continue;
            }
            std::fprintf(text, "IMAGE %s %u\n", argv[g], static_cast<unsigned>(i));
            header(text, im.head);
            ISMRMRD::MetaContainer meta;
            if (im.head.attribute_string_len > 0 && im.attribute_string) {
                ISMRMRD::deserialize(im.attribute_string, meta);
            }
            for (const auto &entry : meta) {
                std::fprintf(text, "M %s", entry.first.c_str());
                for (const auto &value : entry.second) std::fprintf(text, "\t%s", value.as_str());
                std::fprintf(text, "\n");
            }
            std::fwrite(im.data, 1, ISMRMRD::ismrmrd_size_of_image_data(&im), data);
            ISMRMRD::ismrmrd_cleanup_image(&im);
        }
    }
    std::fclose(xml_out);
    std::fclose(text);
    std::fclose(data);
    ISMRMRD::ismrmrd_close_dataset(&dset);
    return status;
}
