"""Generator, discriminator and losses: shapes, FLOP budget, weights I/O, loss values."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import save_file  # noqa: E402

from vne_inline.model.discriminator import PatchDiscriminator  # noqa: E402
from vne_inline.model.generator import (  # noqa: E402
    VNEGenerator,
    count_gflop,
    count_parameters,
    load_weights,
    save_weights,
)
from vne_inline.model.losses import (  # noqa: E402
    LossWeights,
    discriminator_loss,
    enhancement_focus,
    feature_matching_loss,
    focused_l1,
    generator_loss,
    lsgan_generator_loss,
    ms_ssim,
    ms_ssim_scales,
    ssim,
)
from vne_inline.modelspec import CONFIG_KEY, ModelConfig, read_config  # noqa: E402

TINY = ModelConfig(n_cine_frames=5, n_ir_images=4, base_width=4, depth=2, fusion_width=6, name="tiny")


def inputs(config: ModelConfig, b: int = 2, h: int = 16, w: int = 24) -> tuple:
    g = torch.Generator().manual_seed(0)
    return (
        torch.rand(b, config.n_cine_frames, h, w, generator=g),
        torch.rand(b, config.n_ir_images, h, w, generator=g),
        torch.rand(b, 1, h, w, generator=g),
    )


# ---------------------------------------------------------------------------------------- generator
def test_generator_output_shape():
    model = VNEGenerator(TINY)
    assert model(*inputs(TINY)).shape == (2, 1, 16, 24)


def test_generator_rejects_bad_inputs():
    model = VNEGenerator(TINY)
    cine, ir, t1 = inputs(TINY)
    with pytest.raises(AssertionError, match="multiples of 2\\*\\*depth = 4"):
        model(cine[..., :14], ir[..., :14], t1[..., :14])
    with pytest.raises(ValueError, match="ir must be"):
        model(cine, ir[:, :3], t1)
    with pytest.raises(ValueError, match="share B, H, W"):
        model(cine, ir, t1[:1])


def test_default_config_flop_budget_and_size():
    config = ModelConfig()
    gflop = count_gflop(config)
    assert 5 < gflop <= 12.5 < 20  # ~12 GFLOP target, 20 hard cap
    assert count_gflop(config, 128, 128) == pytest.approx(gflop / 4, rel=1e-6)
    n = count_parameters(VNEGenerator(config))
    assert 1_000_000 < n < 10_000_000


def test_generator_flops_scale_with_width():
    wide = dataclasses.replace(TINY, base_width=8)
    assert count_gflop(wide, 64, 64) > 2.5 * count_gflop(TINY, 64, 64)


# ---------------------------------------------------------------------------------------- weights
@pytest.mark.parametrize("fp16", [False, True])
def test_weights_round_trip(tmp_path, fp16):
    torch.manual_seed(1)
    model = VNEGenerator(TINY).eval()
    path = tmp_path / "g.safetensors"
    save_weights(model, path, fp16=fp16)
    assert read_config(path) == TINY
    loaded = load_weights(path)
    assert loaded.config == TINY and not loaded.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert b.dtype == torch.float32, name
        torch.testing.assert_close(b, a.half().float() if fp16 else a, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(*inputs(TINY)), model(*inputs(TINY)), rtol=0.02 if fp16 else 0, atol=0.02 if fp16 else 0
        )


def test_load_weights_errors(tmp_path):
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable"):
        load_weights(damaged)
    no_config = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(no_config))
    with pytest.raises(ValueError, match="no 'vne_config'"):
        load_weights(no_config)
    mismatched = tmp_path / "mismatched.safetensors"
    state = {k: v.contiguous() for k, v in VNEGenerator(TINY).state_dict().items()}
    other = dataclasses.replace(TINY, base_width=8)
    save_file(state, str(mismatched), metadata={CONFIG_KEY: other.to_json()})
    with pytest.raises(ValueError, match="do not match"):
        load_weights(mismatched)


# ---------------------------------------------------------------------------------------- discriminator
def test_patch_discriminator_shapes():
    d = PatchDiscriminator.for_generator(TINY, width=8)
    condition = torch.cat(inputs(TINY, h=64, w=64), dim=1)
    logits, features = d(condition, torch.rand(2, 1, 64, 64))
    assert logits.shape == (2, 1, 6, 6)  # 64 -> 32 -> 16 -> 8 -> 7 -> 6
    assert [f.shape[1] for f in features] == [8, 16, 32, 64]


# ---------------------------------------------------------------------------------------- losses
def test_ms_ssim_values_and_scales():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 1, 96, 96, generator=g)
    torch.testing.assert_close(ms_ssim(x, x), torch.ones(3))
    noise = torch.randn(3, 1, 96, 96, generator=g)
    slightly, very = ms_ssim(x, x + 0.05 * noise), ms_ssim(x, x + 0.5 * noise)
    assert torch.all(very < slightly) and torch.all(slightly < 1) and torch.all(very > 0)
    assert ssim(x, x * 0.5).shape == (3,)
    assert [ms_ssim_scales(s, s) for s in (11, 22, 44, 88, 96, 128, 176, 256)] == [1, 2, 3, 4, 4, 4, 5, 5]
    with pytest.raises(ValueError, match="at least 11"):
        ms_ssim(x[..., :10, :], x[..., :10, :])


def test_ms_ssim_gradient_is_finite_for_signed_images():
    x = (torch.randn(2, 1, 96, 96) * 0.5).requires_grad_()
    (1 - ms_ssim(x, torch.randn(2, 1, 96, 96))).mean().backward()
    assert torch.isfinite(x.grad).all()


def test_adversarial_and_feature_matching_losses():
    ones, zeros = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    assert discriminator_loss(ones, zeros).item() == 0
    assert discriminator_loss(zeros, ones).item() == 1
    assert lsgan_generator_loss(ones).item() == 0
    feats = [torch.rand(2, 3, 8, 8), torch.rand(2, 5, 4, 4)]
    assert feature_matching_loss(feats, feats).item() == 0
    assert feature_matching_loss([f + 1 for f in feats], feats).item() == pytest.approx(1)


def test_generator_loss_weights_parts():
    target = torch.rand(2, 1, 32, 32)
    feats = [torch.rand(2, 4, 8, 8)]
    weights = LossWeights(adversarial=1, l1=2, feature_matching=3, ms_ssim=4)
    total, parts = generator_loss(torch.zeros(2, 1, 3, 3), feats, feats, target + 0.1, target, weights)
    assert set(parts) == {"adversarial", "l1", "feature_matching", "ms_ssim", "myocardium"}
    assert parts["adversarial"].item() == pytest.approx(1) and parts["l1"].item() == pytest.approx(0.1)
    assert parts["myocardium"].item() == 0  # no focus map
    expected = sum(getattr(weights, k) * v.item() for k, v in parts.items())
    assert total.item() == pytest.approx(expected)


def test_myocardium_term_counts_only_the_focus_pixels():
    target = torch.zeros(2, 1, 32, 32)
    fake = target.clone()
    fake[:, :, :16] = 0.5  # error in the top half only
    focus = torch.zeros_like(target)
    focus[0, :, 20:30, 4:12] = 1  # bottom half of the first image: no error there
    feats = [torch.rand(2, 4, 8, 8)]
    weights = LossWeights(adversarial=0, l1=0, feature_matching=0, ms_ssim=0, myocardium=3)
    total, parts = generator_loss(torch.ones(2, 1, 3, 3), feats, feats, fake, target, weights, focus)
    assert parts["myocardium"].item() == 0 and total.item() == 0
    focus[1, :, 10:18] = 1  # half of these rows carry an error of 0.5
    total, parts = generator_loss(torch.ones(2, 1, 3, 3), feats, feats, fake, target, weights, focus)
    expected = 0.5 * (6 * 32) / (80 + 8 * 32)
    assert parts["myocardium"].item() == pytest.approx(expected) and total.item() == pytest.approx(3 * expected)


def test_enhancement_focus_weights_enhanced_myocardium():
    focus = torch.ones(1, 1, 2, 3)
    myo = torch.tensor([[[[1.0, 1, 1], [0, 0, 0]]]])
    target = torch.tensor([[[[0.0, 0.5, 2.0], [1.0, 1.0, -1.0]]]])
    w = enhancement_focus(focus, myo, target, gain=4.0)
    # myocardium: 1 + 4 x clip(target, 0, 1); outside it (blood at 1 included) the plain focus map
    assert torch.equal(w, torch.tensor([[[[1.0, 3.0, 5.0], [1.0, 1.0, 1.0]]]]))
    assert enhancement_focus(focus, myo, target, gain=0.0) is focus
    assert not enhancement_focus(torch.zeros_like(focus), myo, target, gain=4.0).any()


def test_enhancement_gain_pulls_an_uncertain_pixel_towards_the_lesion():
    """Half the samples of one input are lesion (target 0.8), half remote (0): plain L1 is flat
    between them, the enhancement-weighted L1 is lowest at the lesion value."""
    target = torch.tensor([0.8, 0.0]).view(2, 1, 1, 1)
    focus, myo = torch.ones_like(target), torch.ones_like(target)
    def loss(value: float, gain: float) -> float:
        return focused_l1(torch.full_like(target, value), target, enhancement_focus(focus, myo, target, gain)).item()
    assert loss(0.0, 0.0) == pytest.approx(loss(0.8, 0.0))
    assert loss(0.8, 2.0) < loss(0.4, 2.0) < loss(0.0, 2.0)


def test_average_weights_and_command(tmp_path):
    from typer.testing import CliRunner

    from vne_inline.cli import app
    from vne_inline.model.generator import average_weights, load_weights, save_weights

    paths = []
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        save_weights(VNEGenerator(TINY), tmp_path / f"w{seed}.safetensors")
        paths.append(tmp_path / f"w{seed}.safetensors")
    mean = average_weights(paths)
    states = [load_weights(p).state_dict() for p in paths]
    for key, value in mean.state_dict().items():
        torch.testing.assert_close(value, (states[0][key] + states[1][key] + states[2][key]) / 3)
    result = CliRunner().invoke(app, ["average", *map(str, paths), "--out", str(tmp_path / "mean.safetensors")])
    assert result.exit_code == 0, result.output
    for key, value in load_weights(tmp_path / "mean.safetensors").state_dict().items():
        torch.testing.assert_close(value, mean.state_dict()[key])
    other = VNEGenerator(ModelConfig(n_cine_frames=3, n_ir_images=2, base_width=4, depth=2, fusion_width=4, name="other"))
    save_weights(other, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="different configurations"):
        average_weights([paths[0], tmp_path / "other.safetensors"])
    with pytest.raises(ValueError, match="at least one"):
        average_weights([])

