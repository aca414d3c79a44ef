"""Generate synthetic exams: one patient -> `<out>/patient_<NNN>/{cine,t1map,lge,truth}.h5`; many
patients over worker processes (deterministic per (seed, index), whatever the worker count)."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from vne_inline.synth.anatomy import Anatomy
from vne_inline.synth.contrast import COMPONENTS
from vne_inline.synth.export import write_cine, write_lge, write_t1map
from vne_inline.synth.patient import PatientParams, draw_patient, rng_for
from vne_inline.synth.planning import T1_LEVELS, ExamPlan, plan_exam
from vne_inline.synth.scans import (
    LGE_GAIN,
    ExamContext,
    LgeScan,
    T1Scan,
    lge_signal,
    simulate_cine,
    simulate_lge,
    simulate_t1,
)
from vne_inline.synth.truth import SliceMasks, SliceTruth, true_t1_ms, truth_masks, write_truth

__all__ = ["ExamSummary", "patient_dir", "generate_patient", "generate_exams", "FILES"]

FILES = ("cine.h5", "t1map.h5", "lge.h5", "truth.h5")


@dataclass(frozen=True)
class ExamSummary:
    """What one generated exam holds (for progress reports and manifests)."""

    index: int
    directory: Path
    phenotype: str
    lesion_burden: float
    artefacts: dict[str, bool] = field(default_factory=dict)
    seconds: float = 0.0


def patient_dir(out: str | Path, index: int) -> Path:
    return Path(out) / f"patient_{index:03d}"


def _truth_attrs(p: PatientParams, anatomy: Anatomy, lge: LgeScan) -> dict:
    return {
        "phenotype": p.phenotype,
        "field_t": p.field_t,
        "t1_scheme": p.domain.t1_scheme,
        "lesion_burden": anatomy.lesions.burden,
        "lesion_burden_hyperintense": anatomy.lesions.burden_by_grade[0],
        "lesion_burden_intermediate": anatomy.lesions.burden_by_grade[1],
        "artefacts": p.quality.flags,
        "movement_mm": {"t1": list(p.quality.t1_shift_mm), "lge": list(p.quality.lge_shift_mm)},
        "lge_ti_ms": lge.ti_ms,
        "lge_ti_nominal_ms": lge.ti_nominal_ms,
        "patient": p.to_dict(),
    }


def _slice_truths(ctx: ExamContext, plan: ExamPlan, t1: T1Scan, lge: LgeScan) -> list[SliceTruth]:
    comps = ctx.components
    t1_by_name = dict(zip(COMPONENTS, comps.t1_ms.tolist(), strict=True))
    lesion_t1 = (t1_by_name["myo_hyperintense"], t1_by_name["myo_intermediate"])
    ideal = lge_signal(ctx, lge.ti_nominal_ms)
    out = []
    for k, (g, mix, shade) in enumerate(zip(t1.geometries, t1.mixes, t1.shadings, strict=True)):
        masks = truth_masks(mix, g)
        myo = masks["myocardium"].sum()
        out.append(
            SliceTruth(
                slice=k,
                geometry=g,
                **masks,
                t1_true_ms=true_t1_ms(mix, t1_by_name, lesion_t1).reshape(g.shape),
                lge_true=(LGE_GAIN * ctx.image(mix, ideal, shade)).reshape(g.shape).astype("float32"),
                attrs={"level": T1_LEVELS[k], "cine_slice_planned": plan.t1_cine_slice[k],
                       "lesion_fraction": float((masks["lesion_hyperintense"] | masks["lesion_intermediate"]).sum() / max(myo, 1))},
            )
        )
    return out


def generate_patient(out: str | Path, seed: int, index: int, field_t: float | str = 1.5, t1_scheme: str = "shmolli",
                     formats: tuple[str, ...] = ("ismrmrd",)) -> ExamSummary:
    """Simulate and write patient `index` of data set `seed` (same arguments -> identical files);
    `field_t` and `t1_scheme` as `synth.patient.draw_domain` takes them ("mixed": drawn per patient);
    `formats`: "ismrmrd" (cine.h5, t1map.h5, lge.h5) and/or "dicom" (``dicom/``, :mod:`synth.dicom_export`)."""
    start = time.perf_counter()
    p = draw_patient(seed, index, field_t, t1_scheme)
    anatomy = Anatomy.build(p)
    ctx = ExamContext.build(anatomy)
    plan = plan_exam(anatomy, rng_for(seed, index, "protocol"))
    noise = rng_for(seed, index, "noise")
    cine = simulate_cine(ctx, plan.cine, plan.resolution["cine"], noise)
    t1 = simulate_t1(ctx, plan.t1, plan.resolution["t1"], noise)
    lge = simulate_lge(ctx, plan.lge, plan.resolution["lge"], noise)
    d = patient_dir(out, index)
    tmp = _partial_dir(d, os.getpid())
    tmp.mkdir(parents=True, exist_ok=True)
    try:  # written under a temporary name, renamed when complete: never a partial patient
        write_cine(tmp / "cine.h5", p, cine)
        write_t1map(tmp / "t1map.h5", p, t1)
        write_lge(tmp / "lge.h5", p, lge)
        lge_truths = [SliceMasks(i, g, **truth_masks(mix, g)) for i, (g, mix) in enumerate(zip(lge.geometries, lge.mixes, strict=True))]
        write_truth(tmp / "truth.h5", _slice_truths(ctx, plan, t1, lge), _truth_attrs(p, anatomy, lge), lge_truths)
        _export_formats(tmp, p, formats)
        if d.exists():
            shutil.rmtree(d)
        tmp.rename(d)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExamSummary(index, d, p.phenotype, anatomy.lesions.burden, p.quality.flags, time.perf_counter() - start)


def _export_formats(d: Path, p, formats: tuple[str, ...]) -> None:
    """The DICOM export (from the ISMRMRD files) when asked for; the ISMRMRD files kept only when asked for."""
    unknown = set(formats) - {"ismrmrd", "dicom"}
    if unknown or not formats:
        raise ValueError(f"formats must be ismrmrd and/or dicom, got {sorted(formats)}")
    if "dicom" in formats:
        from vne_inline.synth.dicom_export import write_dicom_exam

        write_dicom_exam(d, p)
    if "ismrmrd" not in formats:
        for name in ("cine.h5", "t1map.h5", "lge.h5"):
            (d / name).unlink()


def _partial_dir(d: Path, pid: int | str) -> Path:
    """The temporary name patient directory `d` is written under by process `pid`."""
    return d.with_name(f".{d.name}.partial-{pid}")


def _generate(args: tuple) -> ExamSummary:
    return generate_patient(*args)


def _ignore_sigint() -> None:
    """Worker initialiser: Ctrl-C reaches the parent, which stops the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def generate_exams(out: str | Path, n: int, seed: int, field_t: float | str = 1.5, workers: int = 2, start: int = 0,
                   t1_scheme: str = "shmolli", formats: tuple[str, ...] = ("ismrmrd",)) -> Iterator[ExamSummary]:
    """Generate patients start .. start+n-1, yielding each summary as it completes.

    Workers are spawned processes with one BLAS thread each (the parallelism is across patients). An
    interrupt (Ctrl-C) or a closed generator stops them at once; patients being written are removed,
    the ones completed stay.
    """
    indices = range(start, start + n)
    if workers <= 1:
        for i in indices:
            yield generate_patient(out, seed, i, field_t, t1_scheme, formats)
        return
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # read by the spawned workers' numpy at import
    pool = get_context("spawn").Pool(workers, initializer=_ignore_sigint)
    try:
        yield from pool.imap_unordered(_generate, [(out, seed, i, field_t, t1_scheme, formats) for i in indices])
        pool.close()
    finally:
        pool.terminate()
        pool.join()
        for i in indices:  # what the stopped workers left
            for partial in patient_dir(out, i).parent.glob(_partial_dir(patient_dir(out, i), "*").name):
                shutil.rmtree(partial, ignore_errors=True)
