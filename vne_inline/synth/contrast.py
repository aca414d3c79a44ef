"""Tissue components of one patient and the signal models of the three sequences (pure numpy).

A pixel is a partial-volume mixture of components (tissues, plus LV myocardium split into remote,
intermediate and hyperintense fibrosis); every sequence's signal is linear in the component fractions,
so images are `fractions @ component_signal`. IR images sum *signed* signals before the magnitude is
taken, which is the physically right partial-volume behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vne_inline.physics import t1 as t1phys
from vne_inline.physics import tissue
from vne_inline.physics.ir_sampling import IRSampling, scheme_signals
from vne_inline.synth.labels import LABEL_TISSUE, N_LABELS, Label
from vne_inline.synth.patient import PatientParams
from vne_inline.synth.sampling import PixelMix

__all__ = ["Components", "build_components", "bssfp_signal", "ir_signals", "psir_signal", "null_ti_ms", "weighted_sum", "PSIR_CYCLE_RR", "COMPONENTS"]

TISSUES = ("air", "lung", "muscle", "fat", "liver", "spleen", "marrow", "csf", "blood", "myocardium")
COMPONENTS = (*TISSUES, "myo_hyperintense", "myo_intermediate")
_MYO, _HYPER, _INTER = (COMPONENTS.index(n) for n in ("myocardium", "myo_hyperintense", "myo_intermediate"))

# PSIR LGE inverts every other heartbeat (Kellman et al., MRM 2002;47:372-383).
PSIR_CYCLE_RR = 2


@dataclass(frozen=True)
class Components:
    """Per-component apparent native T1, T2 (ms), proton density, ECV and post-contrast T1 (ms)."""

    names: tuple[str, ...]
    t1_ms: np.ndarray
    t2_ms: np.ndarray
    pd: np.ndarray
    ecv: np.ndarray
    t1_post_ms: np.ndarray

    def label_signal(self, signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-component `signal` (C, ...) as per-label signals (L, ...) and the change (2, ...) that
        hyperintense and intermediate fibrosis make to LV myocardium."""
        per_label = _LABEL_TO_COMPONENT @ signal
        lesion = np.stack([signal[_HYPER] - signal[_MYO], signal[_INTER] - signal[_MYO]])
        return per_label.astype(np.float32), lesion.astype(np.float32)

    def mix_signal(self, mix: PixelMix, signal: np.ndarray) -> np.ndarray:
        """Signal (..., P) of pixel mixtures for a per-component `signal` (C, ...)."""
        per_label, lesion = self.label_signal(signal)
        return weighted_sum(per_label, mix.labels) + weighted_sum(lesion, mix.lesion)


def weighted_sum(weights: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """sum_l weights[l] * fractions[l]: (..., P) from weights (L, ...) and fractions (L, P).

    Accumulated in a fixed order rather than by a BLAS product, so the result does not depend on the
    number of BLAS threads (exams are bit-identical whatever the worker set-up).
    """
    w = np.asarray(weights, dtype=np.float32)
    out = np.zeros((*w.shape[1:], fractions.shape[-1]), dtype=np.float32)
    for wl, fl in zip(w, fractions, strict=True):
        out += wl[..., None] * fl if w.ndim > 1 else wl * fl
    return out


def _label_matrix() -> np.ndarray:
    m = np.zeros((N_LABELS, len(COMPONENTS)), dtype=np.float32)
    for label in Label:
        m[label, COMPONENTS.index(LABEL_TISSUE[label])] = 1.0
    return m


_LABEL_TO_COMPONENT = _label_matrix()


def build_components(p: PatientParams) -> Components:
    """The patient's component table at its field strength (see physics.tissue for the sources)."""
    table = tissue.tissue_table(p.field_t)
    tp = p.tissue
    field_ratio = table["myocardium"].t1_ms / tissue.tissue_table(1.5)["myocardium"].t1_ms
    remote_t1 = tp.myo_t1_ms * field_ratio
    t1 = {n: table[n].t1_ms for n in TISSUES}
    t1["blood"] = tissue.blood_t1_ms(tp.hematocrit, p.field_t)
    t1["myocardium"] = remote_t1
    ecv = {n: table[n].ecv for n in TISSUES}
    ecv["blood"] = 1.0 - tp.hematocrit
    ecv["myocardium"] = tp.ecv_remote
    for name, e, rise in (("myo_hyperintense", tp.ecv_hyperintense, tp.t1_elevation_hyperintense_ms),
                          ("myo_intermediate", tp.ecv_intermediate, tp.t1_elevation_intermediate_ms)):
        t1[name] = remote_t1 + rise * field_ratio
        ecv[name] = e
    t2 = {n: table[n].t2_ms for n in TISSUES} | {n: table["myocardium"].t2_ms for n in COMPONENTS[len(TISSUES):]}
    pd = {n: table[n].pd for n in TISSUES} | {n: table["myocardium"].pd for n in COMPONENTS[len(TISSUES):]}
    dr1 = tissue.blood_dr1_per_ms(tissue.blood_t1_ms(tp.hematocrit, 1.5), tp.blood_t1_post_ms) * tissue.relaxivity_ratio(p.field_t)
    arr = {k: np.array([d[n] for n in COMPONENTS], dtype=np.float64) for k, d in (("t1", t1), ("t2", t2), ("pd", pd), ("ecv", ecv))}
    post = tissue.post_contrast_t1_ms(arr["t1"], arr["ecv"], tp.hematocrit, dr1)
    return Components(COMPONENTS, arr["t1"], arr["t2"], arr["pd"], arr["ecv"], post)


def bssfp_signal(c: Components) -> np.ndarray:
    """Cine bSSFP signal per component: PD sqrt(T2/T1), the optimal-flip steady state up to a constant
    (Scheffler & Lehnhardt, Eur Radiol 2003;13:2409-2418); blood about twice myocardium."""
    return c.pd * np.sqrt(c.t2_ms / c.t1_ms)


def ir_signals(c: Components, s: IRSampling) -> np.ndarray:
    """Signed IR-image signals (C, K) of the T1-mapping readouts of sampling `s`, acquisition order
    (incomplete recovery between inversions included: `physics.ir_sampling.scheme_signals`)."""
    return scheme_signals(c.t1_ms, c.pd, s)


def psir_signal(c: Components, ti_ms: float, cycle_ms: float) -> np.ndarray:
    """Phase-sensitive IR signal per component (sign kept): Mz(TI) = M0 - (M0 + d M_pre) exp(-TI/T1),
    with M_pre = M0 (1 - exp(-(cycle - TI)/T1)) recovered since the previous readout, times PD."""
    t1 = c.t1_post_ms
    d = t1phys.INVERSION_EFFICIENCY
    m_pre = 1.0 - np.exp(-(cycle_ms - ti_ms) / t1)
    return c.pd * (1.0 - (1.0 + d * m_pre) * np.exp(-ti_ms / t1))


def null_ti_ms(t1_ms: float, cycle_ms: float) -> float:
    """The TI (ms) that nulls a tissue of post-contrast T1 `t1_ms` in `psir_signal` (about T1 ln 2)."""
    d = t1phys.INVERSION_EFFICIENCY
    ti = t1_ms * np.log(1.0 + d)
    for _ in range(8):  # fixed point: the recovery term depends weakly on TI
        ti = t1_ms * np.log(1.0 + d * (1.0 - np.exp(-(cycle_ms - ti) / t1_ms)))
    return float(ti)
