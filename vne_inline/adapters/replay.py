"""Offline replay: ISMRMRD HDF5 files and DICOM folders through the inline core, one scan per
connection, in order.

Each file (or DICOM series, see :mod:`adapters.scans`) is one scan as the scanner would stream it:
its header opens a session, its images are fed in order, then the session is closed. All files go through the same
:class:`InlineCore`, so a cine file replayed before (or after) a T1-mapping file of the same study
gives the VNE exactly as two live connections would. The outputs (inputs unchanged, plus VNE) can be
written to one ISMRMRD file with an ``image_<series>`` group per series.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vne_inline.adapters.scans import Scan, scans_of
from vne_inline.core.pipeline import InlineCore, SliceReport
from vne_inline.io.mrd_file import write_file
from vne_inline.io.records import ImageRecord

__all__ = ["ConnectionResult", "replay_scan", "replay_scans", "replay_files", "write_outputs"]


@dataclass
class ConnectionResult:
    """One replayed scan: its name, header, every output image in order, and the per-slice reports."""

    name: str
    header_xml: str | None
    outputs: list[ImageRecord] = field(default_factory=list)
    reports: list[SliceReport] = field(default_factory=list)
    scan: Scan | None = None


def replay_scan(core: InlineCore, scan: Scan) -> ConnectionResult:
    """Replay one scan as one connection."""
    session = core.open_session(scan.header_xml)
    result = ConnectionResult(name=scan.name, header_xml=scan.header_xml, scan=scan)
    for record in scan.records:
        result.outputs += session.feed(record)
    result.outputs += session.close()
    result.reports = list(session.reports)
    return result


def replay_scans(core: InlineCore, scans: Sequence[Scan]) -> list[ConnectionResult]:
    """Replay the scans in the order given, each as its own connection, through the same core."""
    return [replay_scan(core, s) for s in scans]


def replay_files(core: InlineCore, paths: Sequence[str | Path]) -> list[ConnectionResult]:
    """Replay ISMRMRD files and DICOM folders in the order given (ValueError naming a path that cannot
    be read): every scan its own connection, through the same core."""
    return replay_scans(core, scans_of(paths, core.config.rules))


def _series_groups():
    """Group names ``image_<series>``; a series mixing shapes or data types (a DICOM series holding
    uint16 IR images and a float T1 map) continues in ``image_<series>_<n>``."""
    layouts: dict[str, list[tuple]] = {}

    def group_of(record: ImageRecord) -> str:
        base = f"image_{record.series_index}"
        known = layouts.setdefault(base, [])
        key = (record.data.shape, record.data.dtype)
        if key not in known:
            known.append(key)
        n = known.index(key)
        return base if n == 0 else f"{base}_{n}"

    return group_of


def write_outputs(path: str | Path, results: Sequence[ConnectionResult]) -> dict[str, int]:
    """Write every output image into `path` (groups ``image_<series>``, the first file's header);
    returns the image count per group."""
    header = next((r.header_xml for r in results if r.header_xml), None)
    return write_file(path, header, [image for r in results for image in r.outputs], _series_groups())
