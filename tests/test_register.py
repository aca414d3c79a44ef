"""LGE-to-T1 registration: known translations between images of different contrast."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

pytest.importorskip("SimpleITK")

from vne_inline.core.match import Matched, match_onto  # noqa: E402
from vne_inline.core.register import register_matched, register_translation  # noqa: E402
from vne_inline.geometry import SliceGeometry  # noqa: E402


def heart(x_mm: np.ndarray, y_mm: np.ndarray, contrast: str) -> np.ndarray:
    """A blood pool (r < 20 mm), a myocardial ring (to 30 mm), a fat ring (to 36 mm) and a lobe of
    liver, at the origin; 'T1' and 'LGE' give the tissues unrelated grey levels (fat dark on one,
    bright on the other)."""
    r = np.hypot(x_mm, y_mm)
    labels = np.select([r < 20, r < 30, r < 36, (x_mm > 10) & (y_mm > 30)], [1, 2, 3, 4], 0)
    levels = {"T1": (0.0, 1550.0, 950.0, 260.0, 600.0), "LGE": (0.05, 1.0, 0.02, 0.8, 0.3)}[contrast]
    return gaussian_filter(np.asarray(levels, dtype=np.float64)[labels], 1.5)  # partial-volume edges


def grid(spacing: tuple[float, float], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    ny, nx = shape
    x = (np.arange(nx) - (nx - 1) / 2) * spacing[0]
    y = (np.arange(ny) - (ny - 1) / 2) * spacing[1]
    return np.meshgrid(x, y)


@pytest.mark.parametrize("shift", [(2.4, -1.7), (0.0, 0.0), (-4.2, 3.1)])
def test_recovers_a_known_translation_across_contrasts(shift):
    spacing, shape = (1.2, 1.1), (120, 110)
    xx, yy = grid(spacing, shape)
    fixed = heart(xx, yy, "T1") + np.random.default_rng(0).normal(0, 20, shape)
    # the LGE patient sits `shift` further along x and y: moving(p + shift) == fixed anatomy at p
    moving = heart(xx - shift[0], yy - shift[1], "LGE")
    found = register_translation(fixed, moving, spacing, ((shape[0] - 1) / 2, (shape[1] - 1) / 2))
    assert found.x_mm == pytest.approx(shift[0], abs=0.3) and found.y_mm == pytest.approx(shift[1], abs=0.3)


def test_search_is_bounded_by_max_shift():
    spacing, shape = (1.0, 1.0), (100, 100)
    xx, yy = grid(spacing, shape)
    found = register_translation(heart(xx, yy, "T1"), heart(xx - 9.0, yy, "LGE"), spacing, (49.5, 49.5),
                                 max_shift_mm=4.0)
    assert abs(found.x_mm) <= 4.0 and abs(found.y_mm) <= 4.0


def test_bad_input_is_refused():
    a = np.zeros((50, 50))
    with pytest.raises(ValueError, match="one shape"):
        register_translation(a, np.zeros((50, 40)), (1.0, 1.0), (25, 25))
    nan = a.copy()
    nan[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        register_translation(a, nan, (1.0, 1.0), (25, 25))
    with pytest.raises(ValueError, match="pixels to compare"):
        register_translation(a, a, (1.0, 1.0), (25, 25), valid=np.zeros_like(a, bool))


def test_register_matched_moves_the_source_grid_and_resamples_once():
    """LGE on its own oblique grid, the patient 3 mm off along the T1 grid's rows: after
    registration the LGE resampled onto the T1 grid lines up with the T1 anatomy."""
    t1_geom = SliceGeometry(position=[10.0, -5.0, 30.0], read_dir=[1, 0, 0], phase_dir=[0, 0.8, 0.6],
                            slice_dir=[0, -0.6, 0.8], fov=[132.0, 121.0, 8.0], matrix=(120, 110))
    lge_geom = SliceGeometry(position=[12.0, -5.5, 30.2], read_dir=[0.995, 0.0998, 0], phase_dir=[-0.0599, 0.598, 0.799],
                             slice_dir=[0.08, -0.795, 0.6], fov=[150.0, 140.0, 8.0], matrix=(100, 96))
    offset = t1_geom.in_plane_vector(0.0, 3.0)

    def anatomy(geom: SliceGeometry, contrast: str, moved: np.ndarray) -> np.ndarray:
        d = geom.pixel_centres() - t1_geom.position - moved
        return heart(d @ t1_geom.read_dir, d @ t1_geom.phase_dir, contrast)

    t1 = anatomy(t1_geom, "T1", np.zeros(3))
    lge = anatomy(lge_geom, "LGE", offset)
    matched = match_onto(t1_geom, [("lge", lge_geom)], {"lge": lge}.__getitem__)
    assert isinstance(matched, Matched)
    registered, shift = register_matched(t1_geom, t1, matched, lge, (54.5, 59.5))
    # within half an LGE pixel (1.5 mm)
    assert shift.x_mm == pytest.approx(0.0, abs=0.75) and shift.y_mm == pytest.approx(3.0, abs=0.75)
    truth = t1_geom.resample_from(anatomy(lge_geom, "LGE", np.zeros(3)), lge_geom).data  # had it not moved
    before = np.abs(matched.resampled.data - truth).mean()
    after = np.abs(registered.resampled.data - truth).mean()
    assert after < 0.4 * before
    assert np.allclose(registered.match.geometry.position, lge_geom.position - t1_geom.in_plane_vector(shift.x_mm, shift.y_mm))
