"""Slice matching and resampling onto the T1 map's grid (the paper's automated pipeline).

A candidate slice (cine or LGE) matches a T1-map slice when the slice-plane normals have cosine
similarity > 0.9 and the slice positions differ by < 4 mm (Zhang et al., Circulation 2021). Of the
accepted candidates the closest (through-plane distance, then in-plane offset) wins. The same code
serves training-data preparation and the inline pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from vne_inline.geometry import PlaneMatch, Resampled, SliceGeometry

__all__ = ["MatchCriteria", "Match", "Matched", "NoMatch", "find_match", "match_onto", "resample_onto"]

K = TypeVar("K")

#: Largest fraction of target pixels allowed to fall outside the resampled source.
MAX_OUTSIDE_FRACTION = 0.25


@dataclass(frozen=True)
class MatchCriteria:
    """Normal cosine similarity must exceed `min_cosine`; slice distance must be below `max_distance_mm`."""

    min_cosine: float = 0.9
    max_distance_mm: float = 4.0


@dataclass(frozen=True)
class Match(Generic[K]):
    """The accepted candidate `key` and how its plane relates to the target."""

    key: K
    geometry: SliceGeometry
    plane: PlaneMatch


@dataclass(frozen=True)
class NoMatch:
    """Why no candidate was accepted (one line, for logs and rejection tables)."""

    reason: str


def find_match(
    target: SliceGeometry,
    candidates: Sequence[tuple[K, SliceGeometry]],
    criteria: MatchCriteria = MatchCriteria(),
) -> Match[K] | NoMatch:
    """The closest candidate plane satisfying `criteria`, or the reason none does."""
    if not candidates:
        return NoMatch("no candidate slices")
    scored = [(key, geom, target.compare(geom)) for key, geom in candidates]
    accepted = [s for s in scored if s[2].accepted(criteria.min_cosine, criteria.max_distance_mm)]
    if not accepted:
        best = min(scored, key=lambda s: (-round(s[2].cosine, 3), s[2].distance_mm))
        return NoMatch(
            f"no slice within criteria (best: cosine {best[2].cosine:.3f}, distance {best[2].distance_mm:.1f} mm; "
            f"need > {criteria.min_cosine} and < {criteria.max_distance_mm} mm)"
        )
    key, geom, plane = min(accepted, key=lambda s: (s[2].distance_mm, s[2].in_plane_offset_mm))
    return Match(key=key, geometry=geom, plane=plane)


def resample_onto(
    target: SliceGeometry,
    image: np.ndarray,
    source: SliceGeometry,
    max_outside_fraction: float = MAX_OUTSIDE_FRACTION,
) -> Resampled:
    """Bilinear in-plane resampling of `image` (..., y, x) onto `target`; ValueError if it barely overlaps
    or holds non-finite values."""
    if not np.all(np.isfinite(image)):
        raise ValueError("source image holds NaN or infinite values")
    out = target.resample_from(image, source)
    if out.outside_fraction > max_outside_fraction:
        raise ValueError(
            f"source covers only {100 * (1 - out.outside_fraction):.0f} % of the target grid "
            f"(need {100 * (1 - max_outside_fraction):.0f} %)"
        )
    return out


@dataclass(frozen=True)
class Matched(Generic[K]):
    """The accepted candidate and its image resampled onto the target grid."""

    match: Match[K]
    resampled: Resampled


def match_onto(
    target: SliceGeometry,
    candidates: Sequence[tuple[K, SliceGeometry]],
    image_of: Callable[[K], np.ndarray],
    criteria: MatchCriteria = MatchCriteria(),
) -> Matched[K] | NoMatch:
    """:func:`find_match`, then the winner's image (``image_of(key)``) through :func:`resample_onto`;
    NoMatch with the reason when no candidate matches or the matched image cannot be resampled."""
    match = find_match(target, candidates, criteria)
    if isinstance(match, NoMatch):
        return match
    try:
        return Matched(match, resample_onto(target, image_of(match.key), match.geometry))
    except ValueError as exc:
        return NoMatch(f"matched slice not usable: {exc}")
