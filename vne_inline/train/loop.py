"""Conditional-GAN training of the VNE generator (pix2pix family), single process or torchrun DDP.

Per step: the generator maps (cine, ir, t1) to an image; outside the LGE's coverage (``valid`` = 0)
the output is replaced by the target so those pixels carry no loss. The PatchGAN discriminator is
updated first (LSGAN), then the generator with ``model.losses.generator_loss`` (adversarial + L1 +
feature matching + (1 - MS-SSIM) + L1 over the items' myocardial ``focus`` maps). Adam (lr 2e-4, betas 0.5 / 0.999) for both. Mixed precision
(autocast float16 + GradScaler) only on CUDA.

Validation after every epoch (rank 0, whole slices padded with ``core.normalise.stack_batch``): mean
L1 and SSIM inside the LGE coverage (normalised units), and, for slices with myo/remote/blood masks,
the per-patient FWHM lesion burden of the emitted VNE image (``core.normalise.to_vne``) against the
LGE target (``vne_inline.quantify``, myocardium without its partial-volume rim,
``quantify.inner_myocardium``): Pearson r and mean absolute difference (percentage points).

Files (rank 0 only) in the output folder after every epoch: ``checkpoint.safetensors`` (generator,
discriminator and optimiser tensors; JSON metadata ``vne_state`` with epoch, step, seed, options,
optimiser groups, grad-scaler state and metrics history; the model config under
``modelspec.CONFIG_KEY``), ``generator.safetensors`` (``model.generator.save_weights``) and
``metrics.json``. ``resume=True`` continues after the checkpoint's epoch with its config and seed.

Weight averaging: with ``ema_decay > 0`` the trainer keeps an exponential moving average of the
generator's weights (``ema = decay * ema + (1 - decay) * weights`` after every generator step, on
every rank), the usual remedy for GAN outputs that swing from step to step. Validation and
``generator.safetensors`` then use the averaged generator; the checkpoint holds both.

DDP: when ``WORLD_SIZE > 1`` (torchrun), the process group is initialised from the environment
(nccl on CUDA, gloo on CPU) and each rank trains on its ``DistributedSampler`` share. Sample
randomness depends only on (seed, epoch, index) (``train.dataset``), so a resumed run sees the data
an uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from vne_inline.core.normalise import crop, stack_batch, to_vne
from vne_inline.model.discriminator import PatchDiscriminator
from vne_inline.model.generator import VNEGenerator, atomic_save_file, load_weights, save_weights
from vne_inline.model.losses import LossWeights, discriminator_loss, enhancement_focus, generator_loss, ssim
from vne_inline.modelspec import CONFIG_KEY, ModelConfig, read_config
from vne_inline.quantify import LGE_FRACTIONS, inner_myocardium, patient_burden, slice_burden
from vne_inline.train.dataset import FullSlice, TripletDataset, read_index, split_patients

__all__ = [
    "CHECKPOINT_NAME",
    "GENERATOR_NAME",
    "METRICS_NAME",
    "GANTrainer",
    "TrainOptions",
    "load_checkpoint",
    "read_checkpoint_state",
    "save_checkpoint",
    "train",
    "validate",
]

CHECKPOINT_NAME = "checkpoint.safetensors"
GENERATOR_NAME = "generator.safetensors"
METRICS_NAME = "metrics.json"
CHECKPOINT_FORMAT = "vne-checkpoint/1"
STATE_KEY = "vne_state"


@dataclass(frozen=True)
class TrainOptions:
    """Training settings; ``threads = 0`` keeps torch's default (divided among ranks on CPU DDP),
    ``max_steps_per_epoch = 0`` runs whole epochs, ``device`` is auto, cpu or cuda; ``init`` names
    generator weights (``save_weights`` format) to start from instead of a random initialisation
    (fine-tuning: their config wins; ignored on resume); ``ema_decay`` in [0, 1) is the weight
    averaging's decay per step (0: no averaging); ``cine_dropout`` the share of training samples whose
    cine input is zeroed (`TripletDataset`); ``keep_epochs`` also writes each epoch's averaged
    generator as ``epoch_NNN.safetensors`` (for epoch selection on held-out exams)."""

    epochs: int = 30
    batch_size: int = 8
    crop_size: int = 128
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    weights: LossWeights = field(default_factory=LossWeights)
    disc_width: int = 32
    disc_layers: int = 3
    seed: int = 0
    threads: int = 0
    max_steps_per_epoch: int = 0
    device: str = "auto"
    val_fraction: float = 0.1
    workers: int = 0
    fp16_weights: bool = False
    progress: bool = True
    init: str | None = None
    ema_decay: float = 0.999
    cine_dropout: float = 0.0
    keep_epochs: bool = False


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """Parameters of `module` need no gradient inside the block."""
    module.requires_grad_(False)
    try:
        yield
    finally:
        module.requires_grad_(True)


class GANTrainer:
    """Generator and discriminator with their optimisers (and DDP wrappers when `distributed`)."""

    def __init__(
        self,
        generator: VNEGenerator,
        discriminator: PatchDiscriminator,
        options: TrainOptions,
        device: torch.device,
        distributed: bool = False,
    ) -> None:
        if not 0 <= options.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {options.ema_decay}")
        self.device = device
        self.options = options
        self.generator = generator.to(device)
        self.ema = copy.deepcopy(self.generator).requires_grad_(False) if options.ema_decay > 0 else None
        self.discriminator = discriminator.to(device)
        wrap = DistributedDataParallel if distributed else (lambda m: m)
        self._g = wrap(self.generator)
        self._d = wrap(self.discriminator)
        betas = (options.beta1, options.beta2)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=options.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=options.lr, betas=betas)
        self.amp = device.type == "cuda"
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.step = 0

    @property
    def averaged(self) -> VNEGenerator:
        """The generator to validate and ship: the weight average when kept, else the generator."""
        return self.ema if self.ema is not None else self.generator

    def reset_average(self) -> None:
        """Restart the average at the generator's current weights (after loading new weights)."""
        if self.ema is not None:
            self.ema.load_state_dict(self.generator.state_dict())

    @torch.no_grad()
    def _update_average(self) -> None:
        if self.ema is None:
            return
        weight = 1.0 - self.options.ema_decay
        for avg, new in zip(self.ema.parameters(), self.generator.parameters(), strict=True):
            avg.lerp_(new.detach(), weight)
        for avg, new in zip(self.ema.buffers(), self.generator.buffers(), strict=True):
            avg.copy_(new)

    def optimisers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimisers by checkpoint name."""
        return {"opt_g": self.opt_g, "opt_d": self.opt_d}

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp)

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One discriminator and one generator update; returns the losses (generator parts unweighted)."""
        b = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        condition = torch.cat([b["cine"], b["ir"], b["t1"]], dim=1)
        pair = torch.cat([condition, condition])
        target, valid = b["target"], b["valid"]
        with self._autocast():
            fake = self._g(b["cine"], b["ir"], b["t1"])
            fake = valid * fake + (1 - valid) * target
            logits, _ = self._d(pair, torch.cat([target, fake.detach()]))
            real_logits, fake_logits = logits.float().chunk(2)
            loss_d = discriminator_loss(real_logits, fake_logits)
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler_d.scale(loss_d).backward()
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()

        # the discriminator is called without its DDP wrapper: it is not updated here
        with _frozen(self.discriminator), self._autocast():
            logits, features = self.discriminator(pair, torch.cat([target, fake]))
            halves = [f.float().chunk(2) for f in features]
            loss_g, parts = generator_loss(
                logits.float().chunk(2)[1],
                [fake_f for _, fake_f in halves],
                [real_f for real_f, _ in halves],
                fake,
                target,
                self.options.weights,
                None if "focus" not in b else enhancement_focus(b["focus"], b["myo"], target, self.options.weights.enhancement),
            )
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler_g.scale(loss_g).backward()
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        self._update_average()
        self.step += 1
        return {"loss_g": loss_g.item(), "loss_d": loss_d.item(), **{k: v.item() for k, v in parts.items()}}


# ---------------------------------------------------------------------------------------- checkpoints
def _module_tensors(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def _optimiser_tensors(prefix: str, optimiser: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    state = optimiser.state_dict()["state"]
    return {
        f"{prefix}.{pid}.{k}": v.detach().cpu().contiguous() for pid, s in state.items() for k, v in s.items()
    }


def _split(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    start = len(prefix) + 1
    return {k[start:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def save_checkpoint(path: Path, trainer: GANTrainer, state: dict) -> None:
    """Write models, optimiser states and `state` (epoch, step, seed, history...) atomically."""
    tensors = {
        **_module_tensors("generator", trainer.generator),
        **_module_tensors("discriminator", trainer.discriminator),
        **(_module_tensors("ema", trainer.ema) if trainer.ema is not None else {}),
    }
    for name, optimiser in trainer.optimisers().items():
        tensors.update(_optimiser_tensors(name, optimiser))
    full_state = {
        **state,
        "step": trainer.step,  # the trainer's count is authoritative
        "param_groups": {
            name: opt.state_dict()["param_groups"] for name, opt in trainer.optimisers().items()
        },
        "scalers": {"g": trainer.scaler_g.state_dict(), "d": trainer.scaler_d.state_dict()},
    }
    metadata = {
        "format": CHECKPOINT_FORMAT,
        CONFIG_KEY: trainer.generator.config.to_json(),
        STATE_KEY: json.dumps(full_state),
    }
    atomic_save_file(tensors, path, metadata)


def read_checkpoint_state(path: Path) -> tuple[ModelConfig, dict]:
    """The config and JSON state of a checkpoint (header only)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{path}: not a readable checkpoint ({exc})") from exc
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} file")
    return ModelConfig.from_json(meta[CONFIG_KEY]), json.loads(meta[STATE_KEY])


def load_checkpoint(path: Path, trainer: GANTrainer) -> dict:
    """Restore models, optimisers, grad scalers and step into `trainer`; returns the stored state."""
    config, state = read_checkpoint_state(path)
    if config != trainer.generator.config:
        raise ValueError(
            f"{path}: checkpoint config {config} differs from the trainer's {trainer.generator.config}"
        )
    tensors = load_file(str(path))
    trainer.generator.load_state_dict(_split(tensors, "generator"))
    trainer.discriminator.load_state_dict(_split(tensors, "discriminator"))
    if trainer.ema is not None:
        average = _split(tensors, "ema")
        trainer.ema.load_state_dict(average if average else _split(tensors, "generator"))
    for name, optimiser in trainer.optimisers().items():
        per_param: dict[int, dict[str, torch.Tensor]] = defaultdict(dict)
        for key, value in _split(tensors, name).items():
            pid, item = key.split(".", 1)
            per_param[int(pid)][item] = value
        optimiser.load_state_dict({"state": dict(per_param), "param_groups": state["param_groups"][name]})
    for scaler, key in ((trainer.scaler_g, "g"), (trainer.scaler_d, "d")):
        if state["scalers"][key]:  # empty when the run was not on CUDA
            scaler.load_state_dict(state["scalers"][key])
    trainer.step = int(state["step"])
    return state


# ---------------------------------------------------------------------------------------- validation
def _pearson(a: list[float], b: list[float]) -> float | None:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


@torch.no_grad()
def validate(generator: VNEGenerator, slices: list[FullSlice], device: torch.device) -> dict:
    """Whole-slice L1 / SSIM in the LGE coverage and per-patient FWHM burden agreement (module docstring)."""
    generator.eval()
    l1, similarity = [], []
    burdens: dict[str, dict[str, list]] = defaultdict(lambda: {"vne": [], "lge": []})
    fraction = LGE_FRACTIONS["FWHM"]
    for s in slices:
        batch, pad = stack_batch([s.inputs], generator.config.size_multiple)
        out = generator(**{k: torch.from_numpy(v).to(device) for k, v in batch.items()})
        pred = np.where(s.valid, crop(out, pad)[0, 0].float().cpu().numpy(), s.target)
        if s.valid.any():
            l1.append(float(np.abs(pred - s.target)[s.valid].mean()))
        similarity.append(
            float(ssim(torch.from_numpy(pred)[None, None], torch.from_numpy(s.target)[None, None])[0])
        )
        if s.has_masks:
            rois = (inner_myocardium(s.masks["myo"], s.pixel_spacing_mm), s.masks["remote"], s.masks["blood"])
            for kind, image in (("vne", to_vne(pred)), ("lge", s.target)):
                burdens[s.patient][kind].append(slice_burden(image, *rois, fraction, s.pixel_area_mm2))
    generator.train()
    vne = [patient_burden(b["vne"]) for b in burdens.values()]
    lge = [patient_burden(b["lge"]) for b in burdens.values()]
    return {
        "l1": float(np.mean(l1)) if l1 else None,
        "ssim": float(np.mean(similarity)) if similarity else None,
        "burden_patients": len(vne),
        "burden_r_fwhm": _pearson(vne, lge),
        "burden_mae_fwhm": float(np.mean(np.abs(np.subtract(vne, lge)))) if vne else None,
    }


# ---------------------------------------------------------------------------------------- driver
@dataclass(frozen=True)
class _Rank:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _resolve_device(option: str, local_rank: int) -> torch.device:
    if option not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {option!r}")
    if option == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    use_cuda = option == "cuda" or (option == "auto" and torch.cuda.is_available())
    return torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")


def _start(options: TrainOptions) -> _Rank:
    """Device, threads and (when WORLD_SIZE > 1) the process group from torchrun's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = _resolve_device(options.device, int(os.environ.get("LOCAL_RANK", "0")))
    if options.threads > 0:
        torch.set_num_threads(options.threads)
    elif world > 1 and device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if world == 1:
        return _Rank(0, 1, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Rank(dist.get_rank(), world, device)


def _write_outputs(out: Path, trainer: GANTrainer, state: dict, options: TrainOptions) -> None:
    save_checkpoint(out / CHECKPOINT_NAME, trainer, state)
    save_weights(trainer.averaged, out / GENERATOR_NAME, fp16=options.fp16_weights)
    if options.keep_epochs:
        save_weights(trainer.averaged, out / epoch_weights_name(state["epoch"]), fp16=options.fp16_weights)
    summary = {"config": json.loads(trainer.generator.config.to_json()), **state}
    tmp = out / f".{METRICS_NAME}.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, out / METRICS_NAME)


def epoch_weights_name(epoch: int) -> str:
    """File name of one epoch's averaged generator weights in a run folder (``keep_epochs``)."""
    return f"epoch_{epoch:03d}.safetensors"


def _epoch_line(metrics: dict) -> str:
    train_part = " ".join(f"{k}={v:.4g}" for k, v in metrics["train"].items())
    val_part = " ".join(f"{k}={v:.4g}" for k, v in metrics["val"].items() if isinstance(v, float))
    return f"epoch {metrics['epoch']} step {metrics['step']}: {train_part} | val {val_part}"


def train(
    data: str | Path,
    out: str | Path,
    config: ModelConfig | None = None,
    options: TrainOptions | None = None,
    resume: bool = False,
) -> list[dict]:
    """Train on a triplets file, writing to `out` (module docstring); returns the per-epoch metrics history.

    With `resume`, the checkpoint's config, seed and discriminator shape win over `config` / `options`.
    """
    options = options or TrainOptions()
    data, out = Path(data), Path(out)
    ckpt = out / CHECKPOINT_NAME
    if resume:
        if not ckpt.exists():
            raise ValueError(f"--resume: no {CHECKPOINT_NAME} in {out}")
        config, state = read_checkpoint_state(ckpt)
        stored = state["options"]
        options = replace(
            options, seed=stored["seed"], disc_width=stored["disc_width"], disc_layers=stored["disc_layers"]
        )
    elif options.init is not None:
        config = read_config(Path(options.init))
    config = config or ModelConfig()
    rank = _start(options)
    try:
        return _run(data, out, config, options, resume, rank)
    finally:
        if rank.world_size > 1:
            dist.destroy_process_group()


def _run(
    data: Path, out: Path, config: ModelConfig, options: TrainOptions, resume: bool, rank: _Rank
) -> list[dict]:
    records = read_index(data)
    train_patients, val_patients = split_patients(
        [r.patient for r in records], options.val_fraction, options.seed
    )
    train_names = [r.name for r in records if r.patient in set(train_patients)]
    val_names = [r.name for r in records if r.patient in set(val_patients)]
    if not train_names:
        raise ValueError(f"{data.name}: no training slices")
    dataset = TripletDataset(data, train_names, config, crop_size=options.crop_size, seed=options.seed,
                             cine_dropout=options.cine_dropout)
    sampler = DistributedSampler(dataset, rank.world_size, rank.rank, shuffle=True, seed=options.seed)
    loader = DataLoader(dataset, options.batch_size, sampler=sampler, num_workers=options.workers)

    torch.manual_seed(options.seed)
    trainer = GANTrainer(
        VNEGenerator(config),
        PatchDiscriminator.for_generator(config, options.disc_width, options.disc_layers),
        options,
        rank.device,
        distributed=rank.world_size > 1,
    )
    history: list[dict] = []
    start_epoch = 0
    if resume:
        stored = load_checkpoint(out / CHECKPOINT_NAME, trainer)
        history, start_epoch = stored["history"], stored["epoch"] + 1
    elif options.init is not None:
        trainer.generator.load_state_dict(load_weights(options.init).state_dict())
        trainer.reset_average()
    val_set = TripletDataset(data, val_names, config, crop_size=None, augment=False)
    val_slices = [val_set.full_slice(i) for i in range(len(val_set))] if rank.is_main else []
    if rank.is_main:
        out.mkdir(parents=True, exist_ok=True)

    steps = len(loader) if options.max_steps_per_epoch <= 0 else min(len(loader), options.max_steps_per_epoch)
    show = rank.is_main and options.progress
    columns = (
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[losses]}"),
    )
    with Progress(*columns, disable=not show) as progress:
        for epoch in range(start_epoch, options.epochs):
            started = time.perf_counter()
            dataset.set_epoch(epoch)
            sampler.set_epoch(epoch)
            task = progress.add_task("train", total=steps, epoch=epoch, losses="")
            sums: dict[str, float] = defaultdict(float)
            for _, batch in zip(range(steps), loader, strict=False):
                losses = trainer.train_step(batch)
                for k, v in losses.items():
                    sums[k] += v
                progress.update(task, advance=1, losses=f"G {losses['loss_g']:.3f} D {losses['loss_d']:.3f}")
            metrics = {
                "epoch": epoch,
                "step": trainer.step,
                "train": {k: v / max(steps, 1) for k, v in sums.items()},
                "val": validate(trainer.averaged, val_slices, rank.device) if val_slices else {},
                "seconds": time.perf_counter() - started,
            }
            history.append(metrics)
            if rank.is_main:
                state = {
                    "epoch": epoch,
                    "step": trainer.step,
                    "seed": options.seed,
                    "options": asdict(options),
                    "history": history,
                }
                _write_outputs(out, trainer, state, options)
                if show:
                    progress.console.print(_epoch_line(metrics))
    return history
