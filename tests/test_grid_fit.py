"""The dictionary fit of one amplitude and one shape parameter (physics.grid_fit)."""

from __future__ import annotations

import numpy as np
import pytest

from vne_inline.physics.grid_fit import grid_fit

TI_MS = np.array([100.0, 180.0, 260.0, 1100.0, 2100.0, 3100.0, 4100.0])
LOG_GRID = np.linspace(np.log(50.0), np.log(5000.0), 256)


def _curves(t1_ms: np.ndarray) -> np.ndarray:
    """|1 - 2 exp(-TI/T1)| for each T1: (len(t1), K)."""
    return np.abs(1.0 - 2.0 * np.exp(-TI_MS[None, :] / np.asarray(t1_ms)[:, None]))


def test_noiseless_data_between_grid_points_are_found():
    t1 = np.array([260.0, 960.0, 1234.5, 1500.0, 2500.0])
    amplitude = np.array([1.0, 250.0, 3000.0, 0.01, 77.0])
    y = (_curves(t1) * amplitude[:, None]).T
    fit = grid_fit(_curves(np.exp(LOG_GRID)), y, LOG_GRID)
    assert fit.inner.all()
    np.testing.assert_allclose(np.exp(fit.p), t1, rtol=2e-3)  # the parabola, well inside a grid step (1.8 %)
    np.testing.assert_allclose(fit.a, amplitude, rtol=2e-2)  # A at the nearest grid curve
    np.testing.assert_allclose(fit.energy, np.sum(y * y, axis=0), rtol=1e-3)  # residual near 0


def test_grid_ends_and_non_positive_projections_are_not_inner():
    y = np.stack([_curves([20.0])[0], _curves([9000.0])[0], -_curves([960.0])[0], np.zeros(TI_MS.size)], axis=1)
    fit = grid_fit(_curves(np.exp(LOG_GRID)), y, LOG_GRID)
    np.testing.assert_array_equal(fit.inner, [False, False, False, False])


def test_two_sided_keeps_the_sign_of_the_amplitude():
    y = -3.0 * _curves([960.0]).T
    one, two = (grid_fit(_curves(np.exp(LOG_GRID)), y, LOG_GRID, two_sided=s) for s in (False, True))
    assert not one.inner[0]
    assert two.inner[0] and two.a[0] == pytest.approx(-3.0, rel=2e-2)
    assert np.exp(two.p[0]) == pytest.approx(960.0, rel=2e-3)


def test_per_pixel_curves_give_the_shared_result():
    rng = np.random.default_rng(1)
    t1 = rng.uniform(300.0, 2500.0, 5000)  # more pixels than one block
    y = (_curves(t1) * rng.uniform(10.0, 1000.0, t1.size)[:, None]).T + rng.normal(0.0, 1.0, (TI_MS.size, t1.size))
    shared = grid_fit(_curves(np.exp(LOG_GRID)), y, LOG_GRID)
    per_pixel = grid_fit(np.repeat(_curves(np.exp(LOG_GRID))[:, :, None], t1.size, axis=2), y, LOG_GRID)
    np.testing.assert_array_equal(per_pixel.inner, shared.inner)
    same = np.isclose(per_pixel.p, shared.p, rtol=0.0, atol=1e-4)  # T1 within 0.01 %
    assert same.mean() > 0.99  # float32 scores: a near tie of two grid points may go either way
    assert np.max(np.abs(per_pixel.p - shared.p)) < LOG_GRID[1] - LOG_GRID[0]


def test_shape_errors():
    with pytest.raises(ValueError, match="curves"):
        grid_fit(np.ones((10, 6)), np.ones((7, 3)), np.arange(10.0))
    with pytest.raises(ValueError, match="curves"):
        grid_fit(np.ones((2, 7)), np.ones((7, 3)), np.arange(2.0))
