"""Slice matching (`core.match`): the paper's criteria, the closest plane winning, and `match_onto`."""

from __future__ import annotations

import numpy as np
import pytest

from vne_inline.core.match import Match, MatchCriteria, Matched, NoMatch, find_match, match_onto
from vne_inline.geometry import plane_from_normal

NORMAL = np.array([0.3, -0.4, 0.87])
CENTRE = np.array([5.0, -10.0, 20.0])


def plane(offset_mm: float = 0.0, tilt: float = 0.0, fov: float = 100.0, n: int = 40, shift=(0.0, 0.0, 0.0)):
    normal = NORMAL / np.linalg.norm(NORMAL) + np.array([tilt, 0.0, 0.0])
    unit = NORMAL / np.linalg.norm(NORMAL)
    return plane_from_normal(CENTRE + offset_mm * unit + np.asarray(shift), normal, (fov, fov, 8.0), (n, n))


def test_closest_accepted_plane_wins():
    target = plane()
    candidates = [("far", plane(6.0)), ("near", plane(-1.5)), ("nearer", plane(0.8)), ("tilted", plane(0.0, tilt=0.8))]
    match = find_match(target, candidates)
    assert isinstance(match, Match) and match.key == "nearer"
    assert match.plane.distance_mm == pytest.approx(0.8, abs=1e-6) and match.plane.cosine > 0.99


def test_criteria_reject_with_a_reason():
    target = plane()
    result = find_match(target, [(0, plane(4.5)), (1, plane(0.0, tilt=1.0))])
    assert isinstance(result, NoMatch) and "need > 0.9 and < 4.0 mm" in result.reason
    assert isinstance(find_match(target, [(0, plane(4.5))], MatchCriteria(max_distance_mm=5.0)), Match)
    assert find_match(target, []).reason == "no candidate slices"


def test_match_onto_resamples_the_winner():
    target = plane(n=32)
    sources = {"a": plane(1.0, fov=120.0, n=48), "b": plane(7.0)}
    ramp = {"a": np.tile(np.arange(48, dtype=np.float32), (48, 1)), "b": np.zeros((40, 40), np.float32)}
    matched = match_onto(target, list(sources.items()), ramp.__getitem__)
    assert isinstance(matched, Matched) and matched.match.key == "a"
    data = matched.resampled.data
    assert data.shape == target.shape and not matched.resampled.outside.any()
    assert np.all(np.diff(data, axis=1) > 0)  # the ramp runs along x in both grids
    assert np.allclose(np.diff(data, axis=1), (100.0 / 32) / (120.0 / 48), atol=1e-3)  # pixel-size ratio


def test_match_onto_reports_unusable_images():
    target = plane()
    bad = np.full((40, 40), np.nan, np.float32)
    result = match_onto(target, [(0, plane(0.5))], lambda _: bad)
    assert isinstance(result, NoMatch) and result.reason.startswith("matched slice not usable") and "NaN" in result.reason
    off = plane(0.5, shift=90.0 * np.cross(NORMAL / np.linalg.norm(NORMAL), [0.0, 0.0, 1.0]))
    result = match_onto(target, [(0, off)], lambda _: np.ones((40, 40), np.float32))
    assert isinstance(result, NoMatch) and "covers only" in result.reason
    assert isinstance(match_onto(target, [(0, plane(9.0))], lambda _: bad), NoMatch)  # no match: image never read
