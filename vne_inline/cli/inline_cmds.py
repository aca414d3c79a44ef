"""`vne-inline replay` (ISMRMRD files through the inline core) and `vne-inline demo` (a synthetic exam end to end)."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from vne_inline.cli.app import app
from vne_inline.cli.options import (
    BackendOption,
    ModelOption,
    RolePatternsOption,
    SeriesRolesOption,
    ThreadsOption,
    VneSeriesOption,
    fail,
    role_properties,
)


def _results_table(results) -> Table:
    """One row per T1 slice report: file, slice, VNE made or skipped, why, cine match, time."""
    table = Table(title="VNE per T1 slice")
    for column in ("file", "T1 slice", "VNE", "reason", "cine match", "ms"):
        table.add_column(column, justify="right" if column in ("T1 slice", "ms") else "left")
    for result in results:
        for r in result.reports:
            match = "" if r.cine_cosine is None else f"{r.cine_distance_mm:.1f} mm, cos {r.cine_cosine:.3f}"
            table.add_row(result.name, str(r.slice), "[green]made" if r.made else "[yellow]skipped",
                          r.reason, match, "" if r.time_ms is None else f"{r.time_ms:.0f}")
    return table


def run_replay(files: Sequence[Path], out: Path, properties: dict[str, str], store: Path | None, backend=None):
    """Replay `files` (one connection each) through one core (with `backend` if given); write `out`;
    the per-file results. Without `store` a fresh temporary store is used, so replays are independent."""
    from vne_inline.adapters.replay import replay_files, write_outputs
    from vne_inline.core.pipeline import CoreConfig, InlineCore

    with tempfile.TemporaryDirectory(prefix="vne-store-") as tmp:
        config = CoreConfig.from_properties({**properties, "store_dir": str(store or tmp)})
        results = replay_files(InlineCore(config, backend=backend), files)
    write_outputs(out, results)
    return results


def _properties(model: Path | None, backend: str, threads: int | None, vne_series: int | None,
                series_roles: str | None = None, role_patterns: str | None = None) -> dict[str, str]:
    """CoreConfig properties; an empty value keeps the core's default."""
    return {"model": str(model or ""), "backend": backend, "threads": str(threads or ""),
            "vne_series_index": "" if vne_series is None else str(vne_series),
            **role_properties(series_roles, role_patterns)}


def _quiet_core_logs(verbose: bool) -> None:
    """The table already says why a slice was skipped; core warnings are shown with --verbose only."""
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR,
                        format="%(levelname)s %(name)s: %(message)s")


def no_vne_line(results) -> str | None:
    """The one line saying why no VNE was made when T1-map slices were given and none was; else None."""
    reports = [r for result in results for r in result.reports]
    if not reports or any(r.made for r in reports):
        return None
    reasons = sorted({r.reason for r in reports})
    return f"no VNE made from {len(reports)} T1-map slice(s): {'; '.join(reasons)}"


VerboseOption = Annotated[bool, typer.Option(help="Show the core's log lines.")]


@app.command()
def replay(
    files: Annotated[list[Path], typer.Argument(exists=True, help="ISMRMRD image files (one connection each), exam "
                                                "directories or DICOM folders (one connection per series), "
                                                "replayed in this order.")],
    out: Annotated[Path, typer.Option(help="Output ISMRMRD file (not one of the inputs): every output image, "
                                      "groups image_<series>.")],
    dicom_out: Annotated[Path | None, typer.Option(help="Also write each VNE, and each T1 map fitted from IR "
                                                   "images, as a DICOM MR image into this folder (one new series "
                                                   "per T1 series).")] = None,
    model: ModelOption = None,
    backend: BackendOption = "auto",
    threads: ThreadsOption = None,
    store: Annotated[Path | None, typer.Option(help="Per-study slice store to use (and keep); "
                                               "default: a fresh temporary one.")] = None,
    vne_series: VneSeriesOption = None,
    series_roles: SeriesRolesOption = None,
    role_patterns: RolePatternsOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Replay ISMRMRD files or DICOM folders through the inline core, as the scanner would stream them,
    and show per T1 slice whether a VNE was made and why not. Exit status: 0 VNE made (or no T1-map slice
    given), 1 a VNE not written as DICOM (--dicom-out), 2 unusable input, 3 T1-map slices given but no VNE made."""
    _quiet_core_logs(verbose)
    if out.resolve() in {f.resolve() for f in files}:
        raise fail(f"--out {out} is one of the input files; choose another output name", 2)
    try:
        results = run_replay(files, out, _properties(model, backend, threads, vne_series, series_roles,
                                                     role_patterns), store)
    except ValueError as exc:
        raise fail(str(exc), 2) from exc
    console = Console()
    console.print(_results_table(results))
    made = sum(r.made for result in results for r in result.reports)
    console.print(f"{sum(len(r.outputs) for r in results)} images ({made} VNE) written to {out}")
    failures: list[str] = []
    if dicom_out is not None:
        written, fitted, failures = write_dicom_vne(results, dicom_out)
        for line in failures:
            console.print(f"[yellow]not written as DICOM: {line}", highlight=False)
        maps = f" and {fitted} fitted T1 map{'s' * (fitted != 1)}" if fitted else ""
        console.print(f"{written} VNE{maps} written as DICOM to {dicom_out}")
    dicom_failed = dicom_out is not None and bool(failures)
    if (line := no_vne_line(results)) is not None:
        raise fail(line, 3)
    if not any(result.reports for result in results):
        console.print("no T1-map slice in the input, so no VNE (a cine kept in --store still serves a later T1 scan)")
    if dicom_failed:
        raise fail("VNE made but not all written as DICOM (reasons above)", 1)


def write_dicom_vne(results, directory: Path) -> tuple[int, int, list[str]]:
    """Write every VNE and fitted T1 map of the replay `results` as DICOM into `directory`: (VNE written,
    fitted maps written, one line per failure)."""
    from vne_inline.adapters.dicom_output import DicomOutput
    from vne_inline.core.t1_fit import is_fitted_map

    output = DicomOutput()
    for result in results:
        if result.scan is not None:
            output.add(result.scan.records, result.header_xml, result.scan.series)
    written, fitted, failures = 0, 0, []
    for result in results:
        for record in filter(output.writes, result.outputs):  # a fitted T1 map comes before the VNE made from it
            try:
                output.write(record, directory)
            except (ValueError, OSError) as exc:
                failures.append(str(exc))
                continue
            is_map = is_fitted_map(record)
            fitted += is_map
            written += not is_map
    return written, fitted, failures


# ---------------------------------------------------------------------------- demo
def _demo_slices(exam_dir: Path, results):
    """Per T1 slice: T1 map, VNE, LGE resampled onto the T1 grid (None without a match) and the truth masks."""
    from vne_inline.adapters.exam_files import read_exam
    from vne_inline.core.match import Matched, match_onto
    from vne_inline.synth.truth import read_truth
    from vne_inline.viz.demo_figure import DemoSlice

    exam = read_exam(exam_dir, files=[exam_dir / "t1map.h5", exam_dir / "lge.h5"])
    truth = {t.slice: t for t in read_truth(exam_dir / "truth.h5")}
    vne = {r.slice: r.pixels for result in results for r in result.outputs if r.meta_str("DataRole") == "VNE"}
    lge_images = {g.key: g.image for g in exam.lge}
    out = []
    for t1 in exam.t1:
        if t1.slice not in vne:
            continue
        matched = match_onto(t1.geometry, [(g.key, g.geometry) for g in exam.lge], lge_images.__getitem__)
        lge = matched.resampled.data if isinstance(matched, Matched) else None
        t = truth.get(t1.slice)
        masks = {} if t is None else {name: getattr(t, name) for name in
                                      ("myocardium", "lesion_hyperintense", "lesion_intermediate", "remote", "blood")}
        out.append(DemoSlice(t1.slice, t1.t1_ms, vne[t1.slice], lge, masks))
    return out


def _burden_table(exams: Path, backend) -> Table:
    """Patient lesion burden (% of LV myocardium) by threshold, read as `vne-inline evaluate` reads it
    (each image with its own truth ROIs, partial-volume rim left out): LGE, VNE, VNE adjusted, truth."""
    from vne_inline.quantify import LGE_FRACTIONS, VNE_ADJUSTED_FRACTIONS
    from vne_inline.validate.evaluate import evaluate_exams

    evaluation = evaluate_exams(exams, backend)
    patients = evaluation.patients
    n_slices = sum(len(p.slices) for p in patients)
    table = Table(title=f"Lesion burden, % of LV myocardium ({n_slices} slices; as `vne-inline evaluate` reads it)")
    for column in ("threshold", "LGE", "VNE", "VNE (adjusted)"):
        table.add_column(column, justify="left" if column == "threshold" else "right")
    if not patients:
        return table
    (patient,) = patients
    if patient.nondiagnostic:
        table.caption = (f"LGE graded non-diagnostic on {len(patient.nondiagnostic)} slice(s) "
                         f"({patient.nondiagnostic_reasons}): not a reference")
    for name in LGE_FRACTIONS:
        table.add_row(f"{name} ({LGE_FRACTIONS[name]:g} / adj. {VNE_ADJUSTED_FRACTIONS[name]:g})",
                      *(f"{patient.burden(r, name):.1f}" for r in ("LGE", "VNE", "VNE adjusted")))
    if patient.has_truth:
        truth = sum(int((s.truth.lesion & s.rois.myo).sum()) for s in patient.slices)
        myo = sum(int(s.rois.myo.sum()) for s in patient.slices)
        table.add_row("ground truth (lesion masks)", f"{100 * truth / myo:.1f}", "", "")
    return table


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("vne-demo"),
    seed: Annotated[int, typer.Option(help="Seed of the synthetic patient.")] = 0,
    model: ModelOption = None,
    backend: BackendOption = "auto",
    threads: ThreadsOption = None,
    verbose: VerboseOption = False,
) -> None:
    """One synthetic HCM exam end to end: cine and T1 mapping replayed through the inline core with the
    shipped model; writes the VNE ISMRMRD file, a PNG montage (T1 map, VNE, LGE, true lesion outlines)
    and prints the lesion burdens of VNE vs LGE. Synthetic-trained default weights: not for clinical use.
    Ctrl-C stops it at once."""
    _quiet_core_logs(verbose)
    console = Console()
    try:
        _run_demo(console, out, seed, model, backend, threads)
    except KeyboardInterrupt:
        console.print("interrupted: files written so far are complete; none left half-written")
        raise typer.Exit(130) from None


def _run_demo(console: Console, out: Path, seed: int, model: Path | None, backend: str, threads: int | None) -> None:
    from vne_inline.infer import BackendError, load_backend
    from vne_inline.synth.exam import generate_patient
    from vne_inline.viz.demo_figure import montage

    started = time.perf_counter()
    try:
        loaded = load_backend(backend, None if model is None else str(model), threads)
    except BackendError as exc:
        hint = "" if model else (" The shipped default model is not built yet: train one (vne-inline train) "
                                 "and export it, or pass --model.")
        console.print(f"[red]No model to run: {exc}.{hint}", highlight=False)
        raise typer.Exit(1) from exc
    console.print(f"model {loaded.config.name} ({loaded.config.trained_on}-trained) on {loaded.name}")
    exam_dir = generate_patient(out / "exam", seed, 0).directory
    console.print(f"synthetic exam written to {exam_dir}")
    results = run_replay([exam_dir / "cine.h5", exam_dir / "t1map.h5"], out / "vne.h5",
                         _properties(model, backend, threads, None), None, backend=loaded)
    console.print(_results_table(results))
    slices = _demo_slices(exam_dir, results)
    figure = montage(slices, out / "demo.png",
                     f"VNE demo, synthetic patient (seed {seed}); model {loaded.config.name}: "
                     f"{loaded.config.trained_on}-trained, not for clinical use")
    console.print(_burden_table(exam_dir.parent, loaded))
    console.print(f"VNE images: {out / 'vne.h5'}; montage: {figure}; {time.perf_counter() - started:.0f} s")
