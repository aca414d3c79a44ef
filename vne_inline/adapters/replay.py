"""Offline replay: ISMRMRD HDF5 files through the inline core, one file per connection, in order.

Each file is one scan as the scanner would stream it: its header opens a session, its images are
fed group after group (file order), then the session is closed. All files go through the same
:class:`InlineCore`, so a cine file replayed before (or after) a T1-mapping file of the same study
gives the VNE exactly as two live connections would. The outputs (inputs unchanged, plus VNE) can be
written to one ISMRMRD file with an ``image_<series>`` group per series.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vne_inline.core.pipeline import InlineCore, SliceReport
from vne_inline.io.mrd_file import read_file, write_file
from vne_inline.io.records import ImageRecord

__all__ = ["ConnectionResult", "replay_file", "replay_files", "write_outputs"]


@dataclass
class ConnectionResult:
    """One replayed file: its header, every output image in order, and the per-slice reports."""

    source: Path
    header_xml: str | None
    outputs: list[ImageRecord] = field(default_factory=list)
    reports: list[SliceReport] = field(default_factory=list)


def replay_file(core: InlineCore, path: str | Path) -> ConnectionResult:
    """Replay one file as one connection (ValueError naming the file if it cannot be read or holds no image)."""
    mrd = read_file(path)
    if not mrd.records():
        raise ValueError(f"{Path(path).name}: no images (ISMRMRD image groups such as image_1 are needed)")
    session = core.open_session(mrd.header_xml)
    result = ConnectionResult(source=Path(path), header_xml=mrd.header_xml)
    for record in mrd.records():
        result.outputs += session.feed(record)
    result.outputs += session.close()
    result.reports = list(session.reports)
    return result


def replay_files(core: InlineCore, paths: Sequence[str | Path]) -> list[ConnectionResult]:
    """Replay the files in the order given, each as its own connection, through the same core."""
    return [replay_file(core, p) for p in paths]


def write_outputs(path: str | Path, results: Sequence[ConnectionResult]) -> dict[str, int]:
    """Write every output image into `path` (groups ``image_<series>``, the first file's header);
    returns the image count per group."""
    header = next((r.header_xml for r in results if r.header_xml), None)
    return write_file(path, header, [image for r in results for image in r.outputs])
