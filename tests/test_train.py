"""Training data, GAN steps, checkpoints/resume, DDP (2 gloo processes) and the `train` command."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
h5py = pytest.importorskip("h5py")

from safetensors.torch import load_file  # noqa: E402

from vne_inline.model.discriminator import PatchDiscriminator  # noqa: E402
from vne_inline.model.generator import VNEGenerator, load_weights  # noqa: E402
from vne_inline.modelspec import ModelConfig, read_config  # noqa: E402
from vne_inline.train.dataset import (  # noqa: E402
    FOCUS_MARGIN_MM,
    TripletDataset,
    focus_map,
    read_index,
    split_patients,
)
from vne_inline.train.loop import (  # noqa: E402
    CHECKPOINT_NAME,
    GENERATOR_NAME,
    METRICS_NAME,
    GANTrainer,
    TrainOptions,
    load_checkpoint,
    train,
)

TINY = ModelConfig(n_cine_frames=4, n_ir_images=3, base_width=4, depth=2, fusion_width=4, name="tiny")
H, W = 40, 44
CENTRE = (18.0, 25.0)


def tiny_options(**changes) -> TrainOptions:
    base = dict(
        epochs=2,
        batch_size=2,
        crop_size=32,
        disc_width=4,
        threads=1,
        max_steps_per_epoch=2,
        val_fraction=0.4,
        progress=False,
        device="cpu",
    )
    return TrainOptions(**{**base, **changes})


def make_triplets(
    path: Path, n_patients: int = 5, slices: int = 2, masks: bool = True, seed: int = 0
) -> Path:
    """A tiny vne-triplets/1 file of random images; masks: blood disc, myocardial ring, remote quarter."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    r = np.hypot(yy - CENTRE[0], xx - CENTRE[1])
    blood, myo = r < 6, (r >= 6) & (r < 10)
    remote = myo & (xx < CENTRE[1]) & (yy < CENTRE[0])
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "vne-triplets/1"
        for p in range(n_patients):
            for s in range(slices):
                g = f.create_group(f"slices/P{p:03d}_s{s}")
                g["cine"] = rng.uniform(0, 400, (6, H, W)).astype(np.float32)
                g["ir"] = rng.uniform(0, 300, (5, H, W)).astype(np.float32)
                g["ti_ms"] = np.array([100, 180, 260, 1100, 2100], dtype=np.float32)
                g["t1"] = rng.uniform(300, 1800, (H, W)).astype(np.float32)
                g["lge"] = (rng.uniform(-50, 100, (H, W)) + 400 * blood + rng.uniform(0, 300) * myo).astype(
                    np.float32
                )
                valid = np.ones((H, W), np.uint8)
                valid[:, -3:] = 0
                g["valid"] = valid
                g.attrs.update(patient=f"P{p:03d}", slice=s, pixel_spacing_mm=(1.2, 1.4))
                if masks:
                    for name, mask in (("myo", myo), ("remote", remote), ("blood", blood)):
                        g[name] = mask.astype(np.uint8)
                    g.attrs["heart_centre_px"] = CENTRE
    return path


@pytest.fixture(autouse=True)
def one_thread():
    """train() sets torch's thread count; tiny models run fastest (and tests stay isolated) with one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def triplets(tmp_path) -> Path:
    return make_triplets(tmp_path / "triplets.h5")


# ---------------------------------------------------------------------------------------- data
def test_split_patients_is_seeded_disjoint_and_by_patient():
    patients = [f"P{i:02d}" for i in range(20)] * 3
    train_p, val_p = split_patients(patients, 0.1, seed=3)
    assert len(val_p) == 2 and len(train_p) == 18 and not set(train_p) & set(val_p)
    assert (train_p, val_p) == split_patients(patients, 0.1, seed=3)
    assert (
        val_p != split_patients(patients, 0.1, seed=4)[1] or val_p != split_patients(patients, 0.1, seed=5)[1]
    )
    assert split_patients(["only"], 0.1, 0) == (["only"], [])
    assert len(split_patients(["a", "b"], 0.1, 0)[1]) == 1


def test_read_index(triplets):
    records = read_index(triplets)
    assert len(records) == 10 and records[0].patient == "P000" and records[1].slice_index == 1


def test_read_index_rejects_other_files(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "something-else"
    with pytest.raises(ValueError, match="vne-triplets/1"):
        read_index(path)


def test_dataset_items_are_deterministic_crops(triplets):
    names = [r.name for r in read_index(triplets)]
    ds = TripletDataset(triplets, names, TINY, crop_size=32, seed=7)
    item = ds[3]
    assert {k: tuple(v.shape) for k, v in item.items()} == {
        "cine": (4, 32, 32),
        "ir": (3, 32, 32),
        "t1": (1, 32, 32),
        "target": (1, 32, 32),
        "valid": (1, 32, 32),
        "focus": (1, 32, 32),
        "myo": (1, 32, 32),
    }
    assert all(v.dtype == torch.float32 for v in item.values())
    again = TripletDataset(triplets, names, TINY, crop_size=32, seed=7)[3]
    assert all(torch.equal(item[k], again[k]) for k in item)
    ds.set_epoch(1)
    assert not torch.equal(ds[3]["cine"], item["cine"])


def test_crop_is_centred_on_the_heart(tmp_path):
    path = make_triplets(tmp_path / "t.h5", n_patients=1, slices=1)
    with h5py.File(path, "r+") as f:
        t1 = f["slices/P000_s0/t1"]
        t1[...] = 0
        t1[int(CENTRE[0]), int(CENTRE[1])] = 1000.0
    ds = TripletDataset(path, ["P000_s0"], TINY, crop_size=16, jitter_px=0, augment=False)
    t1_crop = ds[0]["t1"][0]
    assert tuple(np.argwhere(t1_crop.numpy() == 1.0)[0]) == (8, 8)
    full = ds.full_slice(0)
    assert full.inputs.shape == (H, W) and full.has_masks and full.pixel_area_mm2 == pytest.approx(1.68)


# ---------------------------------------------------------------------------------------- steps
def test_training_steps_lower_the_loss_on_a_fixed_batch(triplets):
    torch.manual_seed(0)
    names = [r.name for r in read_index(triplets)][:4]
    ds = TripletDataset(triplets, names, TINY, crop_size=32, seed=0)
    batch = {k: torch.stack([ds[i][k] for i in range(4)]) for k in ds[0]}
    options = tiny_options(lr=2e-3)
    trainer = GANTrainer(
        VNEGenerator(TINY), PatchDiscriminator.for_generator(TINY, 4), options, torch.device("cpu")
    )
    losses = [trainer.train_step(batch) for _ in range(25)]
    assert trainer.step == 25
    assert np.mean([x["l1"] for x in losses[-3:]]) < 0.7 * np.mean([x["l1"] for x in losses[:3]])
    assert losses[-1]["ms_ssim"] < losses[0]["ms_ssim"]


# ---------------------------------------------------------------------------------------- train / resume
def test_train_writes_outputs_and_resume_matches_an_uninterrupted_run(tmp_path, triplets):
    full = tmp_path / "full"
    history = train(triplets, full, TINY, tiny_options(epochs=2))
    assert [h["epoch"] for h in history] == [0, 1] and history[-1]["step"] == 4
    for name in (CHECKPOINT_NAME, GENERATOR_NAME, METRICS_NAME):
        assert (full / name).is_file()
    val = history[-1]["val"]
    assert val["burden_patients"] == 2 and 0 <= val["ssim"] <= 1 and val["l1"] > 0
    assert "burden_r_fwhm" in val and "burden_mae_fwhm" in val
    metrics = json.loads((full / METRICS_NAME).read_text())
    assert metrics["step"] == 4 and len(metrics["history"]) == 2 and metrics["config"]["name"] == "tiny"
    assert read_config(full / CHECKPOINT_NAME) == TINY and load_weights(full / GENERATOR_NAME).config == TINY

    split = tmp_path / "split"
    train(triplets, split, TINY, tiny_options(epochs=1))
    resumed = train(
        triplets, split, ModelConfig(), tiny_options(epochs=2), resume=True
    )  # checkpoint config wins
    assert [h["epoch"] for h in resumed] == [0, 1] and resumed[-1]["step"] == 4
    a, b = load_file(str(full / CHECKPOINT_NAME)), load_file(str(split / CHECKPOINT_NAME))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)


def test_checkpoint_restores_trainer_exactly(tmp_path, triplets):
    out = tmp_path / "run"
    train(triplets, out, TINY, tiny_options(epochs=1, fp16_weights=True))
    options = tiny_options()
    fresh = GANTrainer(
        VNEGenerator(TINY), PatchDiscriminator.for_generator(TINY, 4), options, torch.device("cpu")
    )
    state = load_checkpoint(out / CHECKPOINT_NAME, fresh)
    assert fresh.step == 2 and state["epoch"] == 0 and state["seed"] == 0
    stored = load_file(str(out / CHECKPOINT_NAME))
    for k, v in fresh.generator.state_dict().items():
        torch.testing.assert_close(v, stored[f"generator.{k}"], rtol=0, atol=0)
    for pid, s in fresh.opt_d.state_dict()["state"].items():
        torch.testing.assert_close(s["exp_avg"], stored[f"opt_d.{pid}.exp_avg"], rtol=0, atol=0)
    assert fresh.opt_g.state_dict()["param_groups"][0]["betas"] == [0.5, 0.999]
    assert load_file(str(out / GENERATOR_NAME))["fusion.1.weight"].dtype == torch.float16


def test_focus_map_reaches_the_margin_around_the_myocardium():
    myo = np.zeros((40, 40), bool)
    myo[18:22, 10:30] = True
    focus = focus_map(myo, myo.shape, (0.5, 1.0))  # x spacing 0.5 mm, y spacing 1 mm
    assert focus.dtype == np.float32 and np.all(focus[myo] == 1)
    reach_y, reach_x = int(FOCUS_MARGIN_MM / 1.0), int(FOCUS_MARGIN_MM / 0.5)
    assert focus[18 - reach_y, 20] == 1 and focus[18 - reach_y - 1, 20] == 0
    assert focus[20, 10 - reach_x] == 1 and focus[20, 10 - reach_x - 1] == 0
    assert not focus_map(None, (5, 6), (1.0, 1.0)).any() and focus_map(None, (5, 6), (1.0, 1.0)).shape == (5, 6)


def test_dataset_focus_follows_the_masks(tmp_path):
    with_masks = TripletDataset(make_triplets(tmp_path / "m.h5"), ["P000_s0"], TINY, crop_size=None, augment=False)
    without = TripletDataset(make_triplets(tmp_path / "n.h5", masks=False), ["P000_s0"], TINY, crop_size=None,
                             augment=False)
    focus, myo = with_masks[0]["focus"][0].numpy(), with_masks.full_slice(0).masks["myo"]
    assert np.all(focus[myo] == 1) and 0 < focus.mean() < 1 and focus.sum() > myo.sum()
    assert not without[0]["focus"].any() and not without[0]["myo"].any()
    assert np.array_equal(with_masks[0]["myo"][0].numpy().astype(bool), myo)


def test_init_starts_from_given_weights(tmp_path, triplets):
    first = tmp_path / "first"
    train(triplets, first, TINY, tiny_options(epochs=1))
    start = load_weights(first / GENERATOR_NAME)
    zero_lr = tiny_options(epochs=1, lr=0.0, init=str(first / GENERATOR_NAME))
    history = train(triplets, tmp_path / "second", ModelConfig(), zero_lr)  # the weights' config wins
    again = load_weights(tmp_path / "second" / GENERATOR_NAME)
    assert again.config == TINY and history[0]["step"] == 2
    for key, value in start.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value, rtol=0, atol=0, msg=key)
    fresh = load_weights(first / GENERATOR_NAME)
    torch.manual_seed(0)
    assert any(not torch.equal(v, VNEGenerator(TINY).state_dict()[k]) for k, v in fresh.state_dict().items())


def test_weight_average_follows_the_generator(tmp_path, triplets):
    options = tiny_options(ema_decay=0.75)
    torch.manual_seed(0)
    trainer = GANTrainer(VNEGenerator(TINY), PatchDiscriminator.for_generator(TINY, 4), options, torch.device("cpu"))
    start = {k: v.clone() for k, v in trainer.generator.state_dict().items()}
    batch = next(iter(torch.utils.data.DataLoader(
        TripletDataset(triplets, [r.name for r in read_index(triplets)], TINY, crop_size=32), batch_size=2)))
    trainer.train_step(batch)
    after = trainer.generator.state_dict()
    changed = [k for k in start if not torch.equal(start[k], after[k])]
    assert changed
    for k in changed:  # ema = 0.75 * start + 0.25 * new after one step
        torch.testing.assert_close(trainer.ema.state_dict()[k], 0.75 * start[k] + 0.25 * after[k])
    assert trainer.averaged is trainer.ema and not any(p.requires_grad for p in trainer.ema.parameters())
    plain = GANTrainer(VNEGenerator(TINY), PatchDiscriminator.for_generator(TINY, 4), tiny_options(ema_decay=0.0),
                       torch.device("cpu"))
    assert plain.ema is None and plain.averaged is plain.generator
    with pytest.raises(ValueError, match="ema_decay"):
        GANTrainer(VNEGenerator(TINY), PatchDiscriminator.for_generator(TINY, 4), tiny_options(ema_decay=1.0),
                   torch.device("cpu"))


def test_shipped_generator_is_the_average(tmp_path, triplets):
    out = tmp_path / "run"
    train(triplets, out, TINY, tiny_options(epochs=1, ema_decay=0.5))
    stored = load_file(str(out / CHECKPOINT_NAME))
    shipped = load_weights(out / GENERATOR_NAME).state_dict()
    assert any(k.startswith("ema.") for k in stored)
    for k, v in shipped.items():
        torch.testing.assert_close(v, stored[f"ema.{k}"], rtol=0, atol=0)
    assert any(not torch.equal(v, stored[f"generator.{k}"]) for k, v in shipped.items())


def test_resume_needs_a_checkpoint(tmp_path, triplets):
    with pytest.raises(ValueError, match="no checkpoint"):
        train(triplets, tmp_path / "empty", TINY, tiny_options(), resume=True)


def test_train_without_masks_skips_burden(tmp_path):
    data = make_triplets(tmp_path / "nomask.h5", n_patients=3, slices=1, masks=False)
    history = train(data, tmp_path / "run", TINY, tiny_options(epochs=1))
    assert history[0]["val"]["burden_patients"] == 0 and history[0]["val"]["burden_r_fwhm"] is None


# ---------------------------------------------------------------------------------------- DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    history = train(data, out, TINY, tiny_options(epochs=2, max_steps_per_epoch=0))
    Path(out, f"rank{rank}.json").write_text(json.dumps(history[-1]["step"]))


@pytest.mark.slow
def test_ddp_with_two_gloo_processes(tmp_path, triplets):
    out = tmp_path / "ddp"
    out.mkdir()
    torch.multiprocessing.spawn(
        _ddp_worker, args=(2, _free_port(), str(triplets), str(out)), nprocs=2, join=True
    )
    # 6 training slices (3 patients), 2 ranks x batch 2 -> 2 steps per epoch on each rank
    assert [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)] == [4, 4]
    metrics = json.loads((out / METRICS_NAME).read_text())
    assert metrics["step"] == 4 and metrics["history"][-1]["val"]["burden_patients"] == 2
    assert load_weights(out / GENERATOR_NAME).config == TINY


# ---------------------------------------------------------------------------------------- CLI
def test_train_command(tmp_path, triplets):
    from typer.testing import CliRunner

    from vne_inline.cli import app, train_cmds  # noqa: F401  (train_cmds registers `train`)

    out = tmp_path / "cli"
    args = [
        "train",
        "--data",
        str(triplets),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--crop-size",
        "32",
        "--base-width",
        "4",
        "--depth",
        "2",
        "--cine-frames",
        "4",
        "--ir-images",
        "3",
        "--fusion-width",
        "4",
        "--disc-width",
        "4",
        "--threads",
        "1",
        "--max-steps-per-epoch",
        "1",
        "--val-fraction",
        "0.4",
        "--device",
        "cpu",
        "--no-progress",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert read_config(out / GENERATOR_NAME).base_width == 4
    result = CliRunner().invoke(
        app,
        [
            *args[:3],
            "--out",
            str(out),
            "--epochs",
            "2",
            "--resume",
            "--no-progress",
            "--threads",
            "1",
            "--max-steps-per-epoch",
            "1",
            "--batch-size",
            "2",
            "--crop-size",
            "32",
            "--val-fraction",
            "0.4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / METRICS_NAME).read_text())["step"] == 2


def test_train_command_defaults_match_train_options():
    import inspect

    from vne_inline.cli import train_cmds
    from vne_inline.model.losses import LossWeights

    defaults = {k: p.default for k, p in inspect.signature(train_cmds.train_command).parameters.items()}
    options, weights = TrainOptions(), LossWeights()
    for name in ("epochs", "batch_size", "crop_size", "lr", "disc_width", "seed", "threads", "workers", "ema_decay"):
        assert defaults[name] == getattr(options, name), name
    assert (defaults["max_steps_per_epoch"], defaults["val_fraction"]) == (
        options.max_steps_per_epoch,
        options.val_fraction,
    )
    assert (defaults["fp16"], defaults["device"], defaults["progress"]) == (
        options.fp16_weights,
        options.device,
        options.progress,
    )
    cli_weights = (
        defaults["lambda_adv"],
        defaults["lambda_l1"],
        defaults["lambda_fm"],
        defaults["lambda_ssim"],
        defaults["lambda_myo"],
    )
    assert cli_weights == (weights.adversarial, weights.l1, weights.feature_matching, weights.ms_ssim,
                           weights.myocardium)
