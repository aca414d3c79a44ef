"""core.normalise: scaling, time resampling, IR selection, LGE <-> VNE, pad/crop, batching, errors."""

from __future__ import annotations

import numpy as np
import pytest

from vne_inline.core.normalise import (
    INPUT_NAMES,
    SERIES_MAX,
    T1_MAX,
    crop,
    normalise_lge,
    normalise_series,
    normalise_t1,
    pad_to_multiple,
    prepare_inputs,
    resample_cycle,
    robust_scale,
    select_ir,
    stack_batch,
    to_vne,
)
from vne_inline.modelspec import ModelConfig

CONFIG = ModelConfig(n_cine_frames=16, n_ir_images=7, depth=4)
SHOLLI_TI = np.array([100, 180, 260, 1100, 2100, 3100, 4100], dtype=np.float32)


def slice_arrays(h: int = 40, w: int = 52, phases: int = 25, k0: int = 7, seed: int = 0):
    rng = np.random.default_rng(seed)
    cine = rng.uniform(0, 500, (phases, h, w)).astype(np.float32)
    ir = rng.uniform(0, 300, (k0, h, w)).astype(np.float32)
    ti = np.sort(rng.uniform(100, 4000, k0)).astype(np.float32)
    t1 = rng.uniform(200, 2000, (h, w)).astype(np.float32)
    return cine, ir, ti, t1


# ---------------------------------------------------------------------------------------- pad / crop
@pytest.mark.parametrize("shape", [(37, 53), (250, 203), (64, 48), (1, 1)])
@pytest.mark.parametrize("multiple", [1, 8, 16])
def test_pad_crop_round_trip(shape, multiple):
    x = np.random.default_rng(1).normal(size=(2, 3, *shape)).astype(np.float32)
    padded, info = pad_to_multiple(x, multiple)
    assert padded.shape[:2] == (2, 3)
    assert all(
        s % multiple == 0 and 0 <= s - o < multiple for s, o in zip(padded.shape[-2:], shape, strict=True)
    )
    assert info.top <= info.bottom <= info.top + 1 and info.left <= info.right <= info.left + 1
    np.testing.assert_array_equal(crop(padded, info), x)
    assert padded.sum() == pytest.approx(x.sum(), rel=1e-5)  # zero padding


def test_crop_works_on_torch_and_checks_shape():
    torch = pytest.importorskip("torch")
    x = np.arange(37 * 53, dtype=np.float32).reshape(37, 53)
    padded, info = pad_to_multiple(x, 16)
    np.testing.assert_array_equal(crop(torch.from_numpy(padded), info).numpy(), x)
    with pytest.raises(ValueError, match="cannot crop"):
        crop(padded[:-1], info)
    with pytest.raises(ValueError, match="multiple"):
        pad_to_multiple(x, 0)


# ---------------------------------------------------------------------------------------- time / TI
def test_resample_keeps_constant_series_constant():
    series = np.full((27, 4, 5), 3.5, dtype=np.float32)
    np.testing.assert_allclose(resample_cycle(series, 16), 3.5, rtol=0, atol=1e-6)


def test_resample_is_periodic_linear_interpolation():
    phases = 4
    series = np.arange(phases, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    out = resample_cycle(series, 8)[:, 0, 0]
    np.testing.assert_allclose(out, [0, 0.5, 1, 1.5, 2, 2.5, 3, 1.5])  # last frame wraps to phase 0
    np.testing.assert_array_equal(resample_cycle(series, phases), series)


@pytest.mark.parametrize("phases", [20, 30, 40])
def test_resample_follows_a_periodic_signal(phases):
    t = np.arange(phases) / phases
    series = np.sin(2 * np.pi * t)[:, None, None].astype(np.float32)
    out = resample_cycle(series, 16)[:, 0, 0]
    np.testing.assert_allclose(out, np.sin(2 * np.pi * np.arange(16) / 16), atol=0.02)
    # rolling the cycle by half its phases rolls the frames by half theirs (periodicity)
    rolled = resample_cycle(np.roll(series, phases // 2, axis=0), 16)[:, 0, 0]
    np.testing.assert_allclose(rolled, np.roll(out, 8), atol=1e-6)


@pytest.mark.parametrize("k0", [3, 5, 7, 8, 11])
def test_select_ir_keeps_ti_order(k0):
    rng = np.random.default_rng(k0)
    ti = rng.permutation(np.linspace(100, 5000, k0)).astype(np.float32)
    ir = ti[:, None, None] * np.ones((1, 3, 3), np.float32)  # each image holds its own TI
    images, chosen = select_ir(ir, ti, 7)
    assert images.shape == (7, 3, 3)
    assert np.all(np.diff(chosen) >= 0)
    np.testing.assert_array_equal(images[:, 0, 0], chosen)
    assert chosen[0] == ti.min() and chosen[-1] == ti.max()
    if k0 >= 7:
        assert len(set(chosen.tolist())) == 7  # no repeats when there are enough images
    if k0 == 7:
        np.testing.assert_array_equal(chosen, np.sort(ti))


def test_select_ir_molli_8_to_7_is_documented_rank_choice():
    ti = np.array([100, 180, 1100, 1180, 2100, 2180, 3100, 4100], dtype=np.float32)
    _, chosen = select_ir(np.zeros((8, 2, 2), np.float32), ti, 7)
    np.testing.assert_array_equal(chosen, [100, 180, 1100, 2100, 2180, 3100, 4100])


# ---------------------------------------------------------------------------------------- scaling
def test_series_scale_is_shared_by_all_frames():
    base = np.random.default_rng(2).uniform(1, 2, (1, 30, 30)).astype(np.float32)
    series = np.concatenate([base, 2 * base, np.full_like(base, -5)])  # negatives clipped to 0
    out = normalise_series(series)
    np.testing.assert_allclose(out[1], 2 * out[0], rtol=1e-5)
    assert np.all(out[2] == 0) and out.max() <= SERIES_MAX
    assert robust_scale(np.maximum(series, 0)) == pytest.approx(np.percentile(np.maximum(series, 0), 99))


def test_t1_scaling():
    t1 = np.array([[1000.0, np.nan], [-50.0, 9000.0]], dtype=np.float32)
    np.testing.assert_allclose(normalise_t1(t1), [[1.0, 0.0], [0.0, T1_MAX]])


def test_lge_normalise_and_vne_inverse():
    rng = np.random.default_rng(3)
    lge = rng.uniform(-100, 400, (50, 50)).astype(np.float32)
    target, scale = normalise_lge(lge)
    assert scale == pytest.approx(np.percentile(lge, 99), rel=1e-5)
    assert target.min() < 0  # signed PSIR kept
    np.testing.assert_allclose(to_vne(target, scale), np.maximum(lge, 0), rtol=1e-5, atol=1e-3)
    vne = to_vne(np.array([[1.0, -0.2], [np.nan, 0.5]], dtype=np.float32))
    assert vne.dtype == np.float32
    np.testing.assert_allclose(vne, [[1000.0, 0.0], [0.0, 500.0]])


def test_lge_scale_uses_valid_pixels():
    lge = np.ones((10, 10), np.float32)
    lge[:, :5] = 1000.0
    valid = np.zeros((10, 10), bool)
    valid[:, 5:] = True
    _, scale = normalise_lge(lge, valid)
    assert scale == pytest.approx(1.0)


def test_lge_scale_is_the_blood_pool_median_when_known():
    rng = np.random.default_rng(4)
    lge = rng.normal(0.0, 5.0, (20, 20)).astype(np.float32)
    lge[2:4, 2:4] = 3000.0  # fat, brighter than blood
    blood = np.zeros((20, 20), bool)
    blood[8:14, 8:14] = True
    lge[blood] = rng.normal(400.0, 10.0, 36)
    lge[8, 8] = np.nan  # ignored
    target, scale = normalise_lge(lge, blood=blood)
    assert scale == pytest.approx(float(np.nanmedian(lge[blood])))
    assert np.median(target[blood]) == pytest.approx(1.0, abs=0.02) and target[2, 2] == 4.0  # clipped at LGE_LIMIT
    valid = np.ones((20, 20), bool)
    valid[8:11] = False  # half the blood pool uncovered
    assert normalise_lge(lge, valid, blood)[1] == pytest.approx(float(np.median(lge[11:14, 8:14])))
    dark = np.where(blood, -50.0, lge).astype(np.float32)  # no positive blood signal: percentile fallback
    assert normalise_lge(dark, blood=blood)[1] == pytest.approx(float(np.percentile(np.nan_to_num(dark), 99)), rel=1e-5)


def test_scale_needs_positive_signal():
    with pytest.raises(ValueError, match="no finite positive"):
        normalise_series(np.zeros((3, 4, 4)))


# ---------------------------------------------------------------------------------------- prepare / batch
def test_prepare_inputs_shapes_and_nan_handling():
    cine, ir, ti, t1 = slice_arrays()
    cine[3, 5, 5] = np.nan
    t1[0, 0] = np.inf
    inputs = prepare_inputs(cine, ir[::-1], ti[::-1], t1, CONFIG)
    assert (
        inputs.cine.shape == (16, 40, 52)
        and inputs.ir.shape == (7, 40, 52)
        and inputs.t1.shape == (1, 40, 52)
    )
    assert all(a.dtype == np.float32 and np.isfinite(a).all() for a in inputs.arrays().values())
    assert inputs.shape == (40, 52)
    # IR sorted by TI: reversing images and TIs together changes nothing
    np.testing.assert_array_equal(inputs.ir, prepare_inputs(cine, ir, ti, t1, CONFIG).ir)


def test_prepare_inputs_brings_ir_to_k():
    cine, ir, ti, t1 = slice_arrays(k0=11)
    assert prepare_inputs(cine, ir, ti, t1, CONFIG).ir.shape[0] == 7
    cine, ir, ti, t1 = slice_arrays(k0=5, phases=40)
    out = prepare_inputs(cine, ir, ti, t1, CONFIG)
    assert out.ir.shape[0] == 7 and out.cine.shape[0] == 16


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: {**a, "cine": a["cine"][0]}, "cine .* 3 dimensions"),
        (lambda a: {**a, "cine": np.full_like(a["cine"], np.nan)}, "cine .*no finite value"),
        (lambda a: {**a, "t1_ms": a["t1_ms"][:-1]}, "share H, W"),
        (lambda a: {**a, "ir": a["ir"][:2], "ti_ms": a["ti_ms"][:2]}, "at least 3 IR images"),
        (lambda a: {**a, "ti_ms": a["ti_ms"][:-1]}, "ti_ms must have shape"),
        (lambda a: {**a, "ti_ms": np.where(np.arange(7) == 2, np.nan, a["ti_ms"])}, "ti_ms must be finite"),
        (lambda a: {**a, "cine": a["cine"][:1]}, "at least 2 phases"),
        (lambda a: {**a, "ir": a["ir"].astype(np.complex64)}, "real-valued"),
        (lambda a: {**a, "t1_ms": np.zeros((40, 0))}, "empty"),
    ],
)
def test_prepare_inputs_errors(change, message):
    cine, ir, ti, t1 = slice_arrays()
    args = change({"cine": cine, "ir": ir, "ti_ms": ti, "t1_ms": t1})
    with pytest.raises(ValueError, match=message):
        prepare_inputs(config=CONFIG, **args)


def test_stack_batch_pads_every_input_the_same_way():
    items = [prepare_inputs(*slice_arrays(h=37, w=53, seed=s), CONFIG) for s in range(3)]
    batch, info = stack_batch(items, CONFIG.size_multiple)
    assert list(batch) == list(INPUT_NAMES)
    assert batch["cine"].shape == (3, 16, 48, 64) and batch["ir"].shape == (3, 7, 48, 64)
    assert batch["t1"].shape == (3, 1, 48, 64) and batch["t1"].dtype == np.float32
    np.testing.assert_array_equal(crop(batch["ir"], info)[1], items[1].ir)


def test_stack_batch_errors():
    a = prepare_inputs(*slice_arrays(h=37, w=53), CONFIG)
    b = prepare_inputs(*slice_arrays(h=40, w=53), CONFIG)
    with pytest.raises(ValueError, match="share shapes"):
        stack_batch([a, b], 16)
    with pytest.raises(ValueError, match="at least one"):
        stack_batch([], 16)
