"""`vne-inline train`: GAN training of the generator on a triplets.h5 file (torch imported when run).

Multi-GPU / multi-process: ``torchrun --nproc_per_node N "$(command -v vne-inline)" train ...``; the
process group comes from torchrun's environment and only rank 0 writes files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from vne_inline.cli.app import app
from vne_inline.cli.options import require_extra
from vne_inline.modelspec import ModelConfig

_DEFAULT = ModelConfig()


@app.command("train")
def train_command(
    data: Annotated[
        Path,
        typer.Option("--data", help="triplets.h5 from `vne-inline prepare`", exists=True, dir_okay=False),
    ],
    out: Annotated[Path, typer.Option("--out", help="run folder: checkpoint, generator weights, metrics")],
    init: Annotated[
        Path | None,
        typer.Option(help="start from these generator weights (fine-tuning; their model config wins)", exists=True, dir_okay=False),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="continue from <out>/checkpoint.safetensors (its config and seed)")
    ] = False,
    epochs: Annotated[
        int, typer.Option(min=1, help="total epochs (a resumed run counts the finished ones)")
    ] = 30,
    batch_size: Annotated[int, typer.Option(min=1, help="crops per step and process")] = 8,
    crop_size: Annotated[int, typer.Option(min=16, help="heart-centred square crop, pixels")] = 128,
    lr: Annotated[float, typer.Option(help="Adam learning rate (both networks)")] = 2e-4,
    lambda_adv: Annotated[float, typer.Option(help="weight of the LSGAN generator term")] = 1.0,
    lambda_l1: Annotated[float, typer.Option(help="weight of the pixel L1 term")] = 100.0,
    lambda_fm: Annotated[float, typer.Option(help="weight of discriminator feature matching")] = 10.0,
    lambda_ssim: Annotated[float, typer.Option(help="weight of (1 - MS-SSIM)")] = 10.0,
    lambda_myo: Annotated[float, typer.Option(help="weight of the pixel L1 around the LV myocardium (needs masks)")] = 100.0,
    enhancement_gain: Annotated[
        float, typer.Option(min=0.0, help="extra weight of enhanced LV myocardium pixels in that L1 (1 + gain x target)")
    ] = 0.0,
    disc_width: Annotated[int, typer.Option(min=1, help="PatchGAN base width")] = 32,
    base_width: Annotated[int, typer.Option(min=1, help="U-Net base width")] = _DEFAULT.base_width,
    depth: Annotated[
        int, typer.Option(min=1, help="U-Net levels (H, W padded to 2**depth)")
    ] = _DEFAULT.depth,
    cine_frames: Annotated[
        int, typer.Option(min=1, help="F: cine frames per cycle")
    ] = _DEFAULT.n_cine_frames,
    ir_images: Annotated[int, typer.Option(min=1, help="K: IR images")] = _DEFAULT.n_ir_images,
    fusion_width: Annotated[int, typer.Option(min=1, help="fusion block width")] = _DEFAULT.fusion_width,
    name: Annotated[str, typer.Option(help="model name stored with the weights")] = _DEFAULT.name,
    trained_on: Annotated[
        str, typer.Option(help="training data label stored with the weights")
    ] = _DEFAULT.trained_on,
    seed: Annotated[int, typer.Option(help="seed of the split, initialisation and augmentation")] = 0,
    val_fraction: Annotated[float, typer.Option(help="fraction of patients held out for validation")] = 0.1,
    threads: Annotated[int, typer.Option(min=0, help="torch CPU threads (0: default)")] = 0,
    max_steps_per_epoch: Annotated[
        int, typer.Option(min=0, help="cap on steps per epoch (0: whole epoch)")
    ] = 0,
    workers: Annotated[int, typer.Option(min=0, help="data-loader worker processes")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    ema_decay: Annotated[
        float, typer.Option(min=0.0, max=0.9999, help="decay per step of the generator weight average (0: off)")
    ] = 0.999,
    fp16: Annotated[bool, typer.Option(help="store generator.safetensors in float16")] = False,
    cine_dropout: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="share of training samples with the cine input zeroed (VNE without cine)")
    ] = 0.0,
    keep_epochs: Annotated[bool, typer.Option(help="also write each epoch's weights as epoch_NNN.safetensors")] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Train the VNE generator (conditional GAN) on matched native/LGE slices."""
    require_extra("train", "train", "torch")
    from vne_inline.model.losses import LossWeights
    from vne_inline.train.loop import GENERATOR_NAME, TrainOptions, train

    config = ModelConfig(
        n_cine_frames=cine_frames,
        n_ir_images=ir_images,
        base_width=base_width,
        depth=depth,
        fusion_width=fusion_width,
        trained_on=trained_on,
        name=name,
    )
    options = TrainOptions(
        epochs=epochs,
        batch_size=batch_size,
        crop_size=crop_size,
        lr=lr,
        weights=LossWeights(lambda_adv, lambda_l1, lambda_fm, lambda_ssim, lambda_myo, enhancement_gain),
        disc_width=disc_width,
        seed=seed,
        threads=threads,
        max_steps_per_epoch=max_steps_per_epoch,
        device=device,
        val_fraction=val_fraction,
        workers=workers,
        fp16_weights=fp16,
        progress=progress,
        init=str(init) if init is not None else None,
        ema_decay=ema_decay,
        cine_dropout=cine_dropout,
        keep_epochs=keep_epochs,
    )
    try:
        history = train(data, out, config, options, resume=resume)
    except ValueError as exc:
        typer.echo(f"train: {exc}", err=True)
        raise typer.Exit(1) from exc
    if history and os.environ.get("RANK", "0") == "0":
        typer.echo(f"{len(history)} epochs, {history[-1]['step']} steps; weights: {out / GENERATOR_NAME}")


@app.command("average")
def average_command(
    weights: Annotated[list[Path], typer.Argument(help="generator weights files (.safetensors) of one configuration",
                                                  exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option("--out", help="averaged weights file (.safetensors)")],
    fp16: Annotated[bool, typer.Option(help="store the average in float16")] = False,
) -> None:
    """Average generator weights file by file (checkpoint averaging over the epochs of one run)."""
    require_extra("train", "average", "torch")
    from vne_inline.model.generator import average_weights, save_weights

    try:
        model = average_weights(list(weights))
    except ValueError as exc:
        typer.echo(f"average: {exc}", err=True)
        raise typer.Exit(1) from exc
    save_weights(model, out, fp16=fp16)
    typer.echo(f"average of {len(weights)} weights files written to {out}")


@app.command("train-recipe")
def train_recipe_command(
    out: Annotated[Path, typer.Option("--out", help="recipe folder: exams, triplets, run, selection, model")],
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads")] = 2,
    workers: Annotated[int, typer.Option(min=1, help="synthetic-exam worker processes")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    epochs: Annotated[int | None, typer.Option(min=1, help="training epochs (default: the recipe's)")] = None,
    train_patients: Annotated[int | None, typer.Option(min=2, help="training exams (default: the recipe's)")] = None,
    selection_patients: Annotated[int | None, typer.Option(min=2, help="selection exams (default: the recipe's)")] = None,
) -> None:
    """The default model from scratch: mixed-domain synthetic exams, prepare, train, choose the epoch on
    selection exams only, export (ONNX + fp16 safetensors) and the model card's selection table.
    Run it again with the same folder to continue after an interruption."""
    from dataclasses import replace

    require_extra("train", "train-recipe", "torch", "onnx", "onnxscript", "SimpleITK")
    from vne_inline.train.recipe import Recipe, run_recipe

    recipe = Recipe()
    changes = {k: v for k, v in (("epochs", epochs), ("train_patients", train_patients),
                                 ("selection_patients", selection_patients)) if v is not None}
    if "epochs" in changes:
        changes["select_from"] = min(recipe.select_from, changes["epochs"] - 1)
    recipe = replace(recipe, **changes)
    try:
        model_dir = run_recipe(out, recipe, threads=threads, workers=workers, device=device, log=typer.echo)
    except ValueError as exc:
        typer.echo(f"train-recipe: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"model written to {model_dir}")


@app.command("model-domain")
def model_domain_command(
    exams: Annotated[Path, typer.Option("--exams", help="the model's training exams (patient folders)", exists=True, file_okay=False)],
    weights: Annotated[Path, typer.Option("--weights", help="generator weights (.safetensors)", exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option("--out", help="weights written with the domain (.safetensors; an .onnx beside it)")],
) -> None:
    """Measure the training domain on the model's training exams and store it with the weights (the
    input-domain check of every VNE compares each slice with it)."""
    require_extra("train", "model-domain", "torch", "onnx", "onnxscript")
    from vne_inline.infer.export import export_onnx
    from vne_inline.model.generator import load_weights, save_weights
    from vne_inline.train.domain import describe_domain, with_domain
    from vne_inline.validate.evaluate import patient_dirs

    try:
        domain = describe_domain(patient_dirs(exams))
    except ValueError as exc:
        typer.echo(f"model-domain: {exc}", err=True)
        raise typer.Exit(1) from exc
    generator = load_weights(weights)
    generator.config = with_domain(generator.config, domain)
    save_weights(generator, out, fp16=True)
    onnx = export_onnx(load_weights(out), out.with_suffix(".onnx"))
    fields = ", ".join(f"{f:g} T" for f in domain.fields_t)
    typer.echo(f"domain ({fields}; IR images {', '.join(map(str, domain.n_ir_images))}) stored in {out} and {onnx}")
