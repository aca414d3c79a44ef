"""ISMRMRD HDF5 image files: read every image group into records, write records back.

Groups are named `image_<series>` by default (as the scanner export and `vne-inline replay` do).
A group holds one shape and data type, so :func:`write_file` checks them per group and refuses a
mismatch instead of silently resizing.

Files are written so that the C++ library (libismrmrd, what Gadgetron's own tools link) and Python
ismrmrd read them identically: each image header's `attribute_string_len` holds the byte length of its
meta XML (`ismrmrd.Dataset.append_image` leaves it 0, and libismrmrd then reads no meta at all), and the
`attributes` dataset is a variable-length string of HDF5's default (ASCII-labelled) character set, as
libismrmrd writes it, holding the meta's UTF-8 bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import ismrmrd
import numpy as np
from ismrmrd.hdf5 import get_hdf5type, image_header_dtype

from vne_inline.io.records import ImageRecord

__all__ = ["MrdFile", "read_file", "write_file", "series_group"]

#: The `attributes` dataset's type: variable-length string, HDF5's default character set (libismrmrd's own).
ATTRIBUTE_DTYPE = h5py.string_dtype("ascii")


def series_group(record: ImageRecord) -> str:
    return f"image_{record.series_index}"


@dataclass
class MrdFile:
    """The header XML and image groups (in file order) of one ISMRMRD HDF5 file."""

    header_xml: str | None
    groups: dict[str, list[ImageRecord]] = field(default_factory=dict)

    def records(self) -> list[ImageRecord]:
        """Every image, group after group, in acquisition order within a group."""
        return [r for recs in self.groups.values() for r in recs]


def _image_groups(dataset: h5py.Group) -> list[str]:
    names = []
    for name, item in dataset.items():
        if isinstance(item, h5py.Group) and {"header", "data"} <= set(item.keys()):
            names.append(name)
    return names


def _read_group(ds: ismrmrd.Dataset, path: Path, name: str) -> list[ImageRecord]:
    records = []
    for i in range(ds.number_of_images(name)):
        try:
            records.append(ImageRecord.from_ismrmrd(ds.read_image(name, i)))
        except (ValueError, TypeError, IndexError) as exc:  # header fields that do not describe the data
            raise ValueError(f"{path.name}: {name} image {i} has a bad image header ({exc})") from exc
    return records


def read_file(path: str | Path, dataset_name: str = "dataset") -> MrdFile:
    """Read the header and every image group; raises ValueError naming the file if it is not readable or
    holds raw data (acquisitions) only."""
    path = Path(path)
    try:
        h5 = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path.name}: not a readable HDF5 file ({exc})") from exc
    with h5:
        if dataset_name not in h5:
            raise ValueError(f"{path.name}: no '{dataset_name}' group (not an ISMRMRD file?)")
        group_names = _image_groups(h5[dataset_name])
        if not group_names and isinstance(h5[dataset_name].get("data"), h5py.Dataset):
            n = len(h5[dataset_name]["data"])
            raise ValueError(f"{path.name}: raw data ({n} acquisitions, no images): VNE works on reconstructed "
                             "images; reconstruct the scan first (e.g. with Gadgetron) and use the image file")
    try:
        with ismrmrd.Dataset(str(path), dataset_name, mode="r") as ds:
            try:
                xml = ds.read_xml_header()
                xml = xml.decode("utf-8") if isinstance(xml, bytes) else str(xml)
            except LookupError:
                xml = None
            groups = {name: _read_group(ds, path, name) for name in group_names}
    except (OSError, KeyError) as exc:
        raise ValueError(f"{path.name}: damaged ISMRMRD file ({exc})") from exc
    return MrdFile(header_xml=xml, groups=groups)


def _write_group(group: h5py.Group, images: list[ismrmrd.Image]) -> None:
    """`header`, `attributes` and `data` datasets of one image group, extensible along the image axis
    (as `ismrmrd.Dataset.append_image` makes them)."""
    heads = np.concatenate([np.frombuffer(image.getHead(), dtype=image_header_dtype) for image in images])
    attributes = np.empty(len(images), dtype=object)
    for i, image in enumerate(images):
        attributes[i] = image.attribute_string.encode("utf-8")
        heads[i]["attribute_string_len"] = len(attributes[i])
    data_type = get_hdf5type(images[0].data_type)
    data = np.stack([image.data.view(dtype=data_type) for image in images])
    for name, values, dtype in (("header", heads, image_header_dtype), ("attributes", attributes, ATTRIBUTE_DTYPE),
                                ("data", data, data_type)):
        group.create_dataset(name, data=values, dtype=dtype, maxshape=(None, *values.shape[1:]))


def write_file(
    path: str | Path,
    header_xml: str | None,
    records: Iterable[ImageRecord],
    group_of: Callable[[ImageRecord], str] = series_group,
    dataset_name: str = "dataset",
) -> dict[str, int]:
    """Write records into `path` (one group per `group_of(record)`, file order kept within a group),
    replacing any file there; returns the image count per group. The file is written under a temporary
    name and renamed at the end, so an interrupted write never leaves a partial file at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    layout: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    groups: dict[str, list[ismrmrd.Image]] = {}
    for record in records:
        name = group_of(record)
        key = (record.data.shape, record.data.dtype)
        if layout.setdefault(name, key) != key:
            raise ValueError(
                f"group {name}: image of shape {record.data.shape} {record.data.dtype} does not fit "
                f"the group's {layout[name][0]} {layout[name][1]}"
            )
        groups.setdefault(name, []).append(record.to_ismrmrd())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with ismrmrd.Dataset(str(tmp), dataset_name, create_if_needed=True) as ds:
            if header_xml:
                ds.write_xml_header(header_xml.encode("utf-8") if isinstance(header_xml, str) else header_xml)
        with h5py.File(tmp, "a") as h5:
            dataset = h5.require_group(dataset_name)
            for name, images in groups.items():
                _write_group(dataset.create_group(name), images)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {name: len(images) for name, images in groups.items()}
