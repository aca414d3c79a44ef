"""The training domain of a model, measured on its training exams and stored in its configuration
(`core.domain` defines the statistics and the check that uses them at inference)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from vne_inline.adapters.exam_files import classified_records
from vne_inline.adapters.scans import read_scans
from vne_inline.core.domain import TrainingDomain, build_domain, slice_statistics
from vne_inline.core.normalise import normalise_series
from vne_inline.core.roles import Role
from vne_inline.core.slices import t1_slices
from vne_inline.io.header import parse_header
from vne_inline.modelspec import ModelConfig
from vne_inline.physics.ir_sampling import scheme_from_ti

__all__ = ["exam_samples", "describe_domain", "with_domain"]


def exam_samples(directory: Path) -> list[tuple[float, int, str, dict[str, float]]]:
    """(field T, IR-image count, scheme, statistics) of every T1 slice of one exam; field 1.5 T when the
    header does not say."""
    samples = []
    for scan in read_scans(directory):
        records = classified_records(scan)
        maps = [r for role, r in records if role is Role.T1MAP]
        if not maps:
            continue
        try:
            field_t = parse_header(scan.header_xml).field_strength_t or 1.5
        except ValueError:
            field_t = 1.5
        for t1 in t1_slices(maps, [r for role, r in records if role is Role.IR]):
            stats = slice_statistics(t1.t1_ms, normalise_series(t1.ir, "IR images"), t1.geometry.pixel_spacing)
            samples.append((float(field_t), len(t1.ti_ms), scheme_from_ti(len(t1.ti_ms)) or "", stats))
    return samples


def describe_domain(exam_dirs: Iterable[Path]) -> TrainingDomain:
    """The domain of the T1 slices of `exam_dirs` (ValueError when there are none)."""
    return build_domain([s for d in exam_dirs for s in exam_samples(Path(d))])


def with_domain(config: ModelConfig, domain: TrainingDomain) -> ModelConfig:
    """`config` carrying `domain`."""
    return replace(config, domain=domain.to_json())
