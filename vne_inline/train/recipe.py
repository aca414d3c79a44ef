"""The default model's training recipe, from scratch, in one resumable run.

Stages (each skipped when its output is already complete, so an interrupted run continues where it
stopped; every file is written under a temporary name and renamed when complete):

1. ``exams/train``: synthetic training exams, every domain mixed (field strength 1.5 / 3 T, ShMOLLI,
   MOLLI 5(3)3, MOLLI 3(3)3(3)5, vendor-like storage and intensity scales; `synth.exam`).
2. ``exams/selection``: selection exams from a separate seed, same mixture (epoch selection only; the
   test sets of the validation report use other, fresh seeds).
3. ``triplets.h5``: matched, registered triplets (`train.prepare`), non-diagnostic LGE rejected.
4. ``run/``: GAN training (`train.loop`) with stream dropout of the cine, keeping each epoch's weights.
5. ``selection.json``: every ``select_every``-th epoch from ``select_from`` on (and the last), evaluated on
   the selection exams (`validate.evaluate`, per patient, primary analysis); the rule, fixed in
   :func:`choose`: no FWHM false-positive patient, then the highest FWHM ICC(2,1), then the later epoch.
6. ``model/``: the chosen weights as fp16 safetensors and fp32 ONNX, carrying the training domain
   measured on the training exams (`train.domain`, checked per VNE by `core.domain`), and
   ``model/metrics.md``, the selection table of the model card.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vne_inline.modelspec import ModelConfig

__all__ = ["Recipe", "EpochScore", "run_recipe", "choose", "score_evaluation"]

Log = Callable[[str], None]
#: Settings a continued run may change (training longer, choosing among more epochs).
EXTENDABLE = ("epochs", "select_from", "select_every")


@dataclass(frozen=True)
class Recipe:
    """Data sizes, seeds and training settings of the recipe (defaults: the shipped model's)."""

    train_patients: int = 180
    train_seed: int = 7100
    selection_patients: int = 30
    selection_seed: int = 7200
    epochs: int = 40
    select_from: int = 19
    select_every: int = 10
    batch_size: int = 8
    crop_size: int = 128
    lr: float = 2e-4
    lambda_adv: float = 4.0
    lambda_l1: float = 30.0
    lambda_fm: float = 10.0
    lambda_ssim: float = 10.0
    lambda_myo: float = 30.0
    enhancement_gain: float = 6.0
    ema_decay: float = 0.999
    cine_dropout: float = 0.15
    seed: int = 0
    config: ModelConfig = field(default_factory=ModelConfig)

    def selected_epochs(self) -> list[int]:
        """The epochs evaluated on the selection exams."""
        epochs = set(range(self.select_from, self.epochs, self.select_every)) | {self.epochs - 1}
        return sorted(e for e in epochs if 0 <= e < self.epochs)


@dataclass(frozen=True)
class EpochScore:
    """Selection-set figures of one epoch (per patient, primary analysis, VNE reading)."""

    epoch: int
    n_patients: int
    r: dict[str, float]  # threshold -> Pearson r
    icc: dict[str, float]  # threshold -> ICC(2,1)
    false_positives: int  # FWHM false-positive patients
    negatives: int  # reference-negative patients at FWHM

    @classmethod
    def from_dict(cls, d: dict) -> EpochScore:
        return cls(**d)


def choose(scores: list[EpochScore]) -> EpochScore:
    """The selection rule: fewest FWHM false positives, then highest FWHM ICC, then the later epoch."""
    if not scores:
        raise ValueError("no epoch was scored")

    def key(s: EpochScore) -> tuple[int, float, int]:
        icc = s.icc.get("FWHM", math.nan)
        return (-s.false_positives, icc if math.isfinite(icc) else -math.inf, s.epoch)

    return max(scores, key=key)


def score_evaluation(evaluation, epoch: int) -> EpochScore:
    """An epoch's figures from a `validate.evaluate.Evaluation` (its primary analysis)."""
    from vne_inline.validate.evaluate import THRESHOLDS
    from vne_inline.validate.summary import summarise

    primary = evaluation.diagnostic()
    summary = summarise(primary)
    rows = {t: summary.agreement("VNE", t) for t in THRESHOLDS}
    fp = next(f for f in summary.false_positives if (f.reading, f.threshold) == ("VNE", "FWHM"))
    return EpochScore(epoch, len(primary.patients), {t: float(rows[t].stats.pearson.r) for t in THRESHOLDS},
                      {t: float(rows[t].stats.icc.value) for t in THRESHOLDS}, len(fp.patients), fp.negatives)


def _complete_patients(folder: Path, n: int) -> list[int]:
    """Indices < n whose exam folder is complete (every file present and readable)."""
    import h5py

    from vne_inline.synth.exam import FILES, patient_dir

    done = []
    for i in range(n):
        d = patient_dir(folder, i)
        try:
            for name in FILES:
                with h5py.File(d / name, "r"):
                    pass
        except OSError:
            continue
        done.append(i)
    return done


def _synth(folder: Path, n: int, seed: int, log: Log, workers: int) -> None:
    from vne_inline.synth.exam import generate_exams, patient_dir

    done = set(_complete_patients(folder, n))
    todo = [i for i in range(n) if i not in done]
    if not todo:
        log(f"{folder}: {n} exams present")
        return
    log(f"{folder}: generating {len(todo)} of {n} exams (seed {seed}, mixed domains)")
    for i in todo:  # left-overs of an interrupted run are regenerated whole
        shutil.rmtree(patient_dir(folder, i), ignore_errors=True)
    runs = _runs(todo)
    started = time.perf_counter()
    made = 0
    for first, count in runs:
        for _ in generate_exams(folder, count, seed, "mixed", workers, first, t1_scheme="mixed"):
            made += 1
            if made % 20 == 0 or made == len(todo):
                log(f"  {made}/{len(todo)} exams ({time.perf_counter() - started:.0f} s)")


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs (first, count) of sorted indices."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs


def _prepare(exams: Path, out: Path, log: Log) -> None:
    from vne_inline.train.prepare import prepare
    from vne_inline.validate.evaluate import patient_dirs

    if out.exists():
        log(f"{out.name}: present")
        return
    tmp = out.with_suffix(".tmp.h5")
    started = time.perf_counter()
    report = prepare(patient_dirs(exams), tmp)
    os.replace(tmp, out)
    log(f"{out.name}: {report.written} triplets, {len(report.rejected)} slices rejected "
        f"({time.perf_counter() - started:.0f} s)")


def _train(recipe: Recipe, data: Path, run: Path, threads: int, workers: int, device: str, log: Log) -> None:
    from vne_inline.model.losses import LossWeights
    from vne_inline.train.loop import CHECKPOINT_NAME, TrainOptions, read_checkpoint_state, train

    resume = (run / CHECKPOINT_NAME).exists()
    if resume:
        _, state = read_checkpoint_state(run / CHECKPOINT_NAME)
        if state["epoch"] + 1 >= recipe.epochs:
            log(f"training: {recipe.epochs} epochs done")
            return
        log(f"training: resuming after epoch {state['epoch']}")
    options = TrainOptions(
        epochs=recipe.epochs, batch_size=recipe.batch_size, crop_size=recipe.crop_size, lr=recipe.lr,
        weights=LossWeights(recipe.lambda_adv, recipe.lambda_l1, recipe.lambda_fm, recipe.lambda_ssim,
                            recipe.lambda_myo, recipe.enhancement_gain),
        seed=recipe.seed, threads=threads, workers=workers, device=device, ema_decay=recipe.ema_decay,
        cine_dropout=recipe.cine_dropout, keep_epochs=True, progress=False,
    )
    started = time.perf_counter()
    history = train(data, run, recipe.config, options, resume=resume)
    log(f"training: {len(history)} epochs, step {history[-1]['step']} ({time.perf_counter() - started:.0f} s)")


def _select(recipe: Recipe, exams: Path, run: Path, out: Path, threads: int | None, log: Log) -> EpochScore:
    from vne_inline.infer import load_backend
    from vne_inline.train.loop import epoch_weights_name
    from vne_inline.validate.evaluate import evaluate_exams

    scores = {s["epoch"]: EpochScore.from_dict(s) for s in (json.loads(out.read_text()) if out.exists() else [])}
    for epoch in recipe.selected_epochs():
        if epoch in scores:
            continue
        weights = run / epoch_weights_name(epoch)
        started = time.perf_counter()
        backend = load_backend("pytorch", weights, threads)
        score = score_evaluation(evaluate_exams(exams, backend), epoch)
        scores[epoch] = score
        _write_json(out, [asdict(s) for s in sorted(scores.values(), key=lambda s: s.epoch)])
        log(f"selection, epoch {epoch}: FWHM r {score.r['FWHM']:.3f} ICC {score.icc['FWHM']:.3f}, "
            f"{score.false_positives} of {score.negatives} false positive ({time.perf_counter() - started:.0f} s)")
    wanted = [scores[e] for e in recipe.selected_epochs()]
    best = choose(wanted)
    log(f"selected epoch {best.epoch}")
    return best


def _write_json(path: Path, payload) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


def metrics_table(scores: list[EpochScore], best: EpochScore) -> str:
    """The model card's selection table (markdown)."""
    lines = ["| epoch | n | FWHM r / ICC | FWQM r / ICC | FWEM r / ICC | FWHM false positives |",
             "| --- | --- | --- | --- | --- | --- |"]
    for s in scores:
        mark = " (selected)" if s.epoch == best.epoch else ""
        cells = [f"{s.r[t]:.2f} / {s.icc[t]:.2f}" for t in ("FWHM", "FWQM", "FWEM")]
        lines.append(f"| {s.epoch}{mark} | {s.n_patients} | {' | '.join(cells)} | {s.false_positives} of {s.negatives} |")
    return "\n".join(lines) + "\n"


def _export(run: Path, exams: Path, best: EpochScore, model_dir: Path, scores: list[EpochScore], recipe: Recipe,
            log: Log) -> None:
    from vne_inline.infer.export import export_onnx
    from vne_inline.model.generator import load_weights, save_weights
    from vne_inline.train.domain import describe_domain, with_domain
    from vne_inline.train.loop import epoch_weights_name
    from vne_inline.validate.evaluate import patient_dirs

    model_dir.mkdir(parents=True, exist_ok=True)
    generator = load_weights(run / epoch_weights_name(best.epoch))
    domain = describe_domain(patient_dirs(exams))
    generator.config = with_domain(generator.config, domain)
    save_weights(generator, model_dir / "default.safetensors", fp16=True)
    export_onnx(load_weights(model_dir / "default.safetensors"), model_dir / "default.onnx")
    text = (f"Selection set: {recipe.selection_patients} synthetic patients (seed {recipe.selection_seed}, mixed domains), "
            "per patient, primary analysis; rule: fewest FWHM false positives, then highest FWHM ICC(2,1).\n\n"
            + metrics_table(scores, best))
    (model_dir / "metrics.md").write_text(text)
    log(f"model: {model_dir / 'default.onnx'}, {model_dir / 'default.safetensors'}, {model_dir / 'metrics.md'}")


def run_recipe(out: Path, recipe: Recipe = Recipe(), threads: int = 2, workers: int = 2, device: str = "auto",
               log: Log = print) -> Path:
    """Run (or continue) the recipe in `out`; returns the model folder. `threads`: torch threads,
    `workers`: synthetic-exam processes."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = out / "recipe.json"
    stored = asdict(recipe) | {"config": json.loads(recipe.config.to_json())}
    if settings.exists():
        before = json.loads(settings.read_text())
        changed = sorted(k for k in stored if k not in EXTENDABLE and before.get(k) != stored[k])
        if changed:
            raise ValueError(f"{settings} holds other settings ({', '.join(changed)}): continue with those or use a new folder")
    _write_json(settings, stored)
    started = time.perf_counter()
    _synth(out / "exams" / "train", recipe.train_patients, recipe.train_seed, log, workers)
    _synth(out / "exams" / "selection", recipe.selection_patients, recipe.selection_seed, log, workers)
    _prepare(out / "exams" / "train", out / "triplets.h5", log)
    _train(recipe, out / "triplets.h5", out / "run", threads, 0, device, log)
    best = _select(recipe, out / "exams" / "selection", out / "run", out / "selection.json", threads, log)
    scores = [EpochScore.from_dict(s) for s in json.loads((out / "selection.json").read_text())]
    scores = [s for s in scores if s.epoch in recipe.selected_epochs()]
    _export(out / "run", out / "exams" / "train", best, out / "model", scores, recipe, log)
    log(f"recipe finished in this call after {(time.perf_counter() - started) / 60:.0f} min")
    return out / "model"
