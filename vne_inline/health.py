"""Installation checks: can this store be written, can this model make a VNE, end to end?

:func:`store_problem` is what `serve` and `gadgetron-worker` run at start-up; :func:`run_check` is
`vne-inline check`: a built-in synthetic slice (a cine slice of 16 phases, 7 ShMOLLI IR images and the
T1 map of the same plane, at 1.5 T: a ring of myocardium, 960 ms, around blood, 1500 ms, in other
tissue, 1050 ms, under a bright layer of fat, 260 ms, in air) sent through the inline core as two connections, cine then T1 mapping, with
the given store and model, then removed from the store again. Its T1 statistics lie within those of
heart-centred 1.5 T slices, so the input-domain check (`core.domain`) does not withhold its VNE.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vne_inline.core.pipeline import CoreConfig, InlineCore
from vne_inline.core.store import SliceStore
from vne_inline.geometry import SliceGeometry, plane_from_normal
from vne_inline.io.header import ExamHeader, make_header_xml, study_key
from vne_inline.io.records import ImageRecord
from vne_inline.physics.t1 import SHMOLLI_TI_MS

__all__ = ["CheckResult", "check_slice", "run_check", "store_problem"]

_PHASES = 16
#: Native T1 at 1.5 T (ms; design notes, section 5) and IR signal amplitude (fat brightest, as on the scanner)
#: of blood, myocardium, other tissue and fat, and their outer radii (mm); air beyond (T1 0, no signal).
_T1_MS = (1500.0, 960.0, 1050.0, 260.0)
_AMPLITUDE = (450.0, 300.0, 330.0, 1000.0)
_RADII_MM = (22.0, 32.0, 45.0, 50.0)


def store_problem(root: Path) -> str | None:
    """None if `root` is a usable slice store (created if missing; a probe file written, synced and
    removed), else one line naming the store and what is wrong."""
    root = Path(root).expanduser()
    try:
        SliceStore(root)
        probe = root / f".write-check.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"vne-inline")
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as exc:
        return f"slice store {root} is not writable: {exc.strerror or exc}"
    except ValueError as exc:  # a root others may write to, not ours
        return str(exc)
    return None


def _plane(matrix: tuple[int, int]) -> SliceGeometry:
    return plane_from_normal(np.array([0.0, 0.0, 0.0]), np.array([0.3, -0.4, 0.87]), (240.0, 240.0, 8.0), matrix)


def _tissues(g: SliceGeometry, values: tuple[float, ...], contraction: float = 1.0) -> np.ndarray:
    """`values` of blood, myocardium (radii scaled by `contraction`), other tissue and fat; 0 in air."""
    r = np.linalg.norm(g.pixel_centres() - g.position, axis=-1)
    radii = [_RADII_MM[0] * contraction, _RADII_MM[1] * contraction, *_RADII_MM[2:]]
    return np.select([r < radius for radius in radii], values, 0.0).astype(np.float32)


def check_slice(uid: str) -> tuple[tuple[str, list[ImageRecord]], tuple[str, list[ImageRecord]]]:
    """The built-in synthetic slice of study `uid`: (header, records) of the cine scan and of the T1-mapping scan."""
    exam = ExamHeader(study_uid=uid, protocol_name="vne-inline check")
    cine_g, t1_g = _plane((96, 96)), _plane((128, 112))
    cine = []
    for p in range(_PHASES):
        image = _tissues(cine_g, (800.0, 400.0, 350.0, 900.0), 1.0 - 0.15 * np.sin(np.pi * p / _PHASES)).astype(np.uint16)
        cine.append(ImageRecord.new(image, cine_g, {"GADGETRON_DataRole": "Image"}, image_series_index=1, phase=p))
    t1, amplitude = _tissues(t1_g, _T1_MS), _tissues(t1_g, _AMPLITUDE)
    ir = [ImageRecord.new((amplitude * np.abs(1 - 2 * np.exp(-ti / np.maximum(t1, 1.0)))).astype(np.uint16), t1_g,
                          {"GADGETRON_TI": f"{ti:g}"}, image_series_index=2, set=k)
          for k, ti in enumerate(SHMOLLI_TI_MS)]
    t1_map = ImageRecord.new(t1, t1_g, {"GADGETRON_DataRole": "T1"}, image_series_index=3)
    cine_xml = make_header_xml(exam, "VNE-CHECK", (96, 96), (240.0, 240.0, 8.0), n_phases=_PHASES)
    t1_xml = make_header_xml(exam, "VNE-CHECK", (128, 112), (240.0, 240.0, 8.0), n_sets=len(SHMOLLI_TI_MS),
                             ti_ms=[float(t) for t in SHMOLLI_TI_MS])
    return (cine_xml, cine), (t1_xml, ir + [t1_map])


@dataclass
class CheckResult:
    """What `vne-inline check` found: ok, one line per step, and the VNE image if one was made."""

    ok: bool = False
    lines: list[str] = field(default_factory=list)
    vne: ImageRecord | None = None


def run_check(properties: dict[str, str], backend=None) -> CheckResult:
    """Store, model and the inline core end to end on the built-in slice, with these core properties
    (``store_dir``, ``model``, ``backend``, ``threads``, ...); `backend` injects a loaded backend."""
    result = CheckResult()
    try:
        config = CoreConfig.from_properties(properties)
    except ValueError as exc:
        result.lines.append(f"settings: {exc}")
        return result
    if (problem := store_problem(config.store_dir)) is not None:
        result.lines.append(problem)
        return result
    result.lines.append(f"slice store {config.store_dir}: writable")
    core = InlineCore(config, backend=backend)
    (cine_xml, cine), (t1_xml, t1) = check_slice(f"2.25.{uuid.uuid4().int}")
    started = time.perf_counter()
    try:
        for xml, records in ((cine_xml, cine), (t1_xml, t1)):
            session = core.open_session(xml)
            out = [o for r in records for o in session.feed(r)] + session.close()
            if [o for o in out if o.meta_str("GADGETRON_DataRole") != "VNE"] != records:
                result.lines.append("inline core: the input images did not all come back in order")
                return result
    finally:
        core.store.study(str(study_key(cine_xml))).remove()  # the check leaves nothing in the store
    report = session.reports[0] if session.reports else None
    vne = [o for o in out if o.meta_str("GADGETRON_DataRole") == "VNE"]
    if report is None or not report.made or not vne:
        result.lines.append(f"inline core: no VNE made: {report.reason if report else 'no T1-map slice seen'}")
        return result
    image = vne[0]
    model = core.backend().config
    distance = image.geometry.compare(t1[-1].geometry).distance_mm
    if not (np.isfinite(image.pixels).all() and image.pixels.shape == t1[-1].pixels.shape and distance < 1e-3):
        result.lines.append("inline core: the VNE image is not finite or not on the T1 map's grid")
        return result
    qc = image.meta_str("VNE_QC")
    result.lines.append(f"model {model.name} ({model.trained_on}-trained) on {core.backend().name}: VNE made on "
                        f"the T1 map's grid in {1000 * (time.perf_counter() - started):.0f} ms (both scans)"
                        + (f"; input-domain check {qc}: {image.meta_str('VNE_QC_Reason')}" if qc else ""))
    result.ok, result.vne = True, image
    return result

