"""The scanner-like ISMRMRD export of a synthetic exam: one HDF5 file per scan, tagged as design §3 says.

cine.h5: series 1, `GADGETRON_DataRole=Image`, `slice` and `phase` vary, uint16.
t1map.h5: IR images series 2 in acquisition order (`GADGETRON_TI=<ms>`, `set` = acquisition index,
uint16) and the T1 map series 3 (`GADGETRON_DataRole=T1`; float32 ms, or uint16 ms x
`GADGETRON_ScaleRatio` as the patient's domain says). The sequence name is the scheme's.
lge.h5: series 4, `GADGETRON_DataRole=PSIR`, `image_type=REAL`, float32 signed.
"""

from __future__ import annotations

from pathlib import Path

import ismrmrd
import numpy as np

from vne_inline.geometry import SliceGeometry
from vne_inline.io.header import ExamHeader, make_header_xml
from vne_inline.io.mrd_file import write_file
from vne_inline.io.records import ImageRecord
from vne_inline.physics.ir_sampling import SCHEME_LABELS
from vne_inline.synth.patient import PatientParams, study_uids
from vne_inline.synth.scans import CineScan, LgeScan, T1Scan

__all__ = ["SERIES", "SEQUENCE", "write_cine", "write_t1map", "write_lge"]

SERIES = {"cine": 1, "ir": 2, "t1map": 3, "lge": 4}
SEQUENCE = {"cine": "cine_sax", "t1map": "ShMOLLI", "lge": "PSIR_LGE"}


def _sequence(p: PatientParams, scan: str) -> str:
    return SCHEME_LABELS[p.domain.t1_scheme] if scan == "t1map" else SEQUENCE[scan]


def _header(p: PatientParams, scan: str, g: SliceGeometry, **limits) -> str:
    study, frame = study_uids(p.seed, p.index)
    exam = ExamHeader(study_uid=study, frame_of_reference_uid=frame, protocol_name=_sequence(p, scan),
                      field_strength_t=p.field_t, measurement_id=f"{p.patient_id}_{SERIES[scan]:02d}")
    return make_header_xml(exam, p.patient_id, g.matrix, tuple(g.fov), **limits)


def _meta(p: PatientParams, scan: str, comment: str, **extra: str) -> dict[str, str]:
    return {"GADGETRON_SeqDescription": _sequence(p, scan), "GADGETRON_ImageComment": comment, **extra}


def _stored_map(p: PatientParams, t1_ms: np.ndarray) -> tuple[np.ndarray, dict[str, str]]:
    """The T1 map as the patient's domain stores it, and the meta that says how."""
    if p.domain.t1_storage == "float":
        return t1_ms.astype(np.float32), {}
    ratio = p.domain.t1_scale_ratio
    return np.clip(np.rint(t1_ms * ratio), 0, 65535).astype(np.uint16), {"GADGETRON_ScaleRatio": f"{ratio:g}"}


def write_cine(path: Path, p: PatientParams, scan: CineScan) -> None:
    n_slices, n_phases = scan.images.shape[:2]
    records = (
        ImageRecord.new(scan.images[s, f], g, _meta(p, "cine", f"synthetic bSSFP cine, trigger {scan.trigger_ms[f]:.0f} ms", GADGETRON_DataRole="Image"),
                        image_series_index=SERIES["cine"], slice=s, phase=f, image_index=s * n_phases + f + 1)
        for s, g in enumerate(scan.geometries)
        for f in range(n_phases)
    )
    header = _header(p, "cine", scan.geometries[0], n_slices=n_slices, n_phases=n_phases, sequence_type="TrueFISP")
    write_file(path, header, records)


def write_t1map(path: Path, p: PatientParams, scan: T1Scan) -> None:
    n_slices, n_ti = scan.ir_images.shape[:2]
    name = SCHEME_LABELS[scan.scheme]
    ir = [
        ImageRecord.new(scan.ir_images[s, k], g, _meta(p, "t1map", f"synthetic {name} IR image, TI {scan.ti_ms[k]:.0f} ms", GADGETRON_TI=f"{scan.ti_ms[k]:.1f}"),
                        image_series_index=SERIES["ir"], slice=s, set=k, image_index=s * n_ti + k + 1)
        for s, g in enumerate(scan.geometries)
        for k in range(n_ti)
    ]
    maps = []
    for s, g in enumerate(scan.geometries):
        data, scale = _stored_map(p, scan.t1_maps[s])
        maps.append(ImageRecord.new(data, g, _meta(p, "t1map", f"synthetic {name} T1 map (ms)", GADGETRON_DataRole="T1", **scale),
                                    image_series_index=SERIES["t1map"], slice=s, image_index=s + 1))
    header = _header(p, "t1map", scan.geometries[0], n_slices=n_slices, n_sets=n_ti, sequence_type=name, ti_ms=[float(t) for t in scan.ti_ms])
    write_file(path, header, ir + maps)


def write_lge(path: Path, p: PatientParams, scan: LgeScan) -> None:
    records = (
        ImageRecord.new(scan.images[s], g, _meta(p, "lge", f"synthetic PSIR LGE, TI {scan.ti_ms:.0f} ms", GADGETRON_DataRole="PSIR"),
                        image_series_index=SERIES["lge"], slice=s, image_index=s + 1, image_type=ismrmrd.IMTYPE_REAL)
        for s, g in enumerate(scan.geometries)
    )
    header = _header(p, "lge", scan.geometries[0], n_slices=len(scan.geometries), sequence_type="PSIR", ti_ms=[scan.ti_ms])
    write_file(path, header, records)
