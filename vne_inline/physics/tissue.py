"""Tissue constants at 1.5 T and 3 T and the gadolinium kinetics of the post-contrast state (pure numpy).

Native T1 values are the *apparent* values a ShMOLLI/MOLLI map reports (what the synthetic T1 map
must show), not inversion-recovery spin-echo reference values; T2 and proton density (PD, relative to
pure water) drive the cine bSSFP contrast; ECV (extracellular volume fraction) drives the
post-contrast T1 and hence LGE. Units: ms for T1/T2, dimensionless fractions otherwise.

Post-contrast relaxation (the ECV definition, Arheden et al., Radiology 1999;211:698-708; Flett et
al., Circulation 2010;122:138-144)::

    dR1_tissue = dR1_blood * ECV / (1 - Hct)         R1 = 1/T1 in 1/ms
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

__all__ = [
    "Tissue",
    "FIELDS_T",
    "tissue_table",
    "blood_t1_ms",
    "relaxivity_ratio",
    "blood_dr1_per_ms",
    "post_contrast_t1_ms",
    "MYO_T1_SD_MS",
    "HEMATOCRIT_RANGE",
    "ECV_REMOTE_RANGE",
    "ECV_INTERMEDIATE_RANGE",
    "ECV_HYPERINTENSE_RANGE",
    "ECV_INTERMEDIATE_MIN_RISE",
    "T1_RISE_PER_ECV_MS",
    "T1_RISE_FACTOR_RANGE",
    "T1_ELEVATION_MS_RANGE",
    "t1_elevation_ms",
    "BLOOD_T1_POST_MS_RANGE",
]

FIELDS_T = (1.5, 3.0)


@dataclass(frozen=True)
class Tissue:
    """One tissue: apparent native T1 (ms), T2 (ms), proton density (water = 1) and ECV (0..1)."""

    name: str
    t1_ms: float
    t2_ms: float
    pd: float
    ecv: float


# ---------------------------------------------------------------------------------------------------
# 1.5 T
# ---------------------------------------------------------------------------------------------------
_TISSUES_1P5T: dict[str, Tissue] = {
    t.name: t
    for t in (
        # Myocardium: ShMOLLI 962 +/- 25 ms (Piechnik et al., JCMR 2013;15:13); T2 about 50 ms (design
        # brief; Giri et al., JCMR 2009;11:56, T2 mapping 52 ms); water content about 0.78 (myocardial
        # wet-weight water fraction); normal ECV 0.25 +/- 0.04 (Dabir et al., JCMR 2014;16:69).
        Tissue("myocardium", 962.0, 50.0, 0.78, 0.25),
        # Blood: T1 follows the hematocrit, see blood_t1_ms (this entry is Hct 0.42); T2 about 250 ms
        # (design brief; oxygenated blood at 1.5 T); blood water about 0.87 (Herscovitch & Raichle,
        # J Cereb Blood Flow Metab 1985;5:65-69). The "ECV" of blood is its plasma fraction 1 - Hct
        # (0.58 at Hct 0.42), which makes post_contrast_t1_ms add exactly dR1_blood.
        Tissue("blood", 1500.0, 250.0, 0.87, 0.58),
        # Fat: MOLLI/ShMOLLI report about 260 ms (design brief; the multi-peak fat spectrum shortens the
        # apparent T1 against IR-SE 343 ms); T2 58 ms (de Bazelaire et al., Radiology 2004;230:652-659);
        # little gadolinium uptake.
        Tissue("fat", 260.0, 58.0, 0.90, 0.05),
        # Liver: T1 586 ms, T2 46 ms (de Bazelaire 2004); water about 0.71; ECV about 0.28 (healthy
        # hepatic extracellular volume is about 0.25-0.30; chosen).
        Tissue("liver", 586.0, 46.0, 0.71, 0.28),
        # Spleen (stands for the left upper abdomen): T1 1057 ms, T2 79 ms (de Bazelaire 2004).
        Tissue("spleen", 1057.0, 79.0, 0.80, 0.30),
        # Skeletal muscle (chest wall, back): T1 1008 ms, T2 44 ms (Stanisz et al., MRM 2005;54:507-512);
        # ECV about 0.12 (skeletal-muscle extracellular space is about 0.1-0.15; chosen).
        Tissue("muscle", 1008.0, 44.0, 0.75, 0.12),
        # Lung parenchyma: T1 about 1200 ms at 1.5 T (Stadler et al., JMRI 2005;21:759-764);
        # effective T2 very short (T2* about 1-2 ms, 30 ms used as a bSSFP-equivalent); tissue density
        # about 0.15 of water (inflated lung).
        Tissue("lung", 1200.0, 30.0, 0.15, 0.30),
        # Vertebral marrow (mixed red and yellow marrow): T1 about 600 ms, between fat and red marrow
        # (chosen).
        Tissue("marrow", 600.0, 50.0, 0.85, 0.10),
        # CSF: T1 about 4000 ms, T2 about 2000 ms (close to free water; order of magnitude, chosen);
        # no gadolinium crosses into CSF within 15 min.
        Tissue("csf", 4000.0, 2000.0, 1.0, 0.0),
        # Air: no signal (a placeholder with harmless relaxation times).
        Tissue("air", 1000.0, 1.0, 0.0, 0.0),
    )
}

# ---------------------------------------------------------------------------------------------------
# 3 T: T1 ratios 3 T / 1.5 T
# ---------------------------------------------------------------------------------------------------
# Myocardium: MOLLI 1052 / 950 ms (Dabir et al., JCMR 2014;16:69). Blood: apparent (Look-Locker) T1
# about 1.2x; the true-T1 ratio is 1.34 (Stanisz 2005: 1932 / 1441 ms) but MOLLI-type sequences
# underestimate long T1 more at 3 T (chosen). Fat 382 / 343, liver 809 / 586, spleen 1328 / 1057
# (de Bazelaire 2004), muscle 1412 / 1008 (Stanisz 2005); lung, marrow 1.1 and CSF 1.07 (chosen:
# small field dependence of air-filled, fat-rich and free-water tissue).
_T1_RATIO_3T = {
    "myocardium": 1052.0 / 950.0,
    "blood": 1.2,
    "fat": 382.0 / 343.0,
    "liver": 809.0 / 586.0,
    "spleen": 1328.0 / 1057.0,
    "muscle": 1412.0 / 1008.0,
    "lung": 1.1,
    "marrow": 1.1,
    "csf": 1.07,
    "air": 1.0,
}
# T2 at 3 T (ms): myocardium 45 (von Knobelsdorff-Brenkenhoff et al., JCMR 2013;15:53); blood 200
# (shorter at higher field, chosen); fat 68, liver 34, spleen 61 (de Bazelaire 2004); muscle 50
# (Stanisz 2005); others unchanged.
_T2_3T = {"myocardium": 45.0, "blood": 200.0, "fat": 68.0, "liver": 34.0, "spleen": 61.0, "muscle": 50.0}


def tissue_table(field_t: float = 1.5) -> dict[str, Tissue]:
    """Tissue constants at `field_t` (1.5 or 3 T); blood T1 at hematocrit 0.42 (see blood_t1_ms)."""
    if field_t not in FIELDS_T:
        raise ValueError(f"field strength must be one of {FIELDS_T} T, got {field_t!r}")
    if field_t == 1.5:
        return dict(_TISSUES_1P5T)
    return {
        name: replace(t, t1_ms=t.t1_ms * _T1_RATIO_3T[name], t2_ms=_T2_3T.get(name, t.t2_ms))
        for name, t in _TISSUES_1P5T.items()
    }


# ---------------------------------------------------------------------------------------------------
# Patient-level ranges (drawn per synthetic patient)
# ---------------------------------------------------------------------------------------------------
# Between-subject SD of myocardial ShMOLLI T1 (Piechnik 2013: 962 +/- 25 ms).
MYO_T1_SD_MS = 25.0
# Adult hematocrit, women to men (reference intervals about 0.36-0.50).
HEMATOCRIT_RANGE = (0.36, 0.48)
# ECV: remote myocardium in HCM about 0.22-0.29 (normal 0.25 +/- 0.04, Dabir 2014); lesions by grade
# (design brief: intermediate 32-38 %, hyperintense 45-60 %).
ECV_REMOTE_RANGE = (0.22, 0.29)
ECV_INTERMEDIATE_RANGE = (0.32, 0.38)
ECV_HYPERINTENSE_RANGE = (0.45, 0.60)
# Intermediate lesions sit at least this far above the patient's remote ECV, so that they appear grey
# (between remote and blood) on LGE rather than as remote (chosen).
ECV_INTERMEDIATE_MIN_RISE = 0.08
# Native T1 elevation of fibrotic myocardium over remote at 1.5 T (ms): the design's +50 to +250 ms
# with grade (HCM native T1 is elevated in LGE regions: Dass et al., Circ Cardiovasc Imaging
# 2012;5:726-733). The elevation follows the lesion's rise in ECV, since it is the expanded
# extracellular water that lengthens native T1 (in the fast-exchange limit R1 is the volume-weighted
# mean of the compartments' R1: Donahue et al., Magn Reson Med 1994;32:66-76): rise = slope x
# (ECV_lesion - ECV_remote) x a patient factor, clipped to the range. The slope (ms per unit ECV) maps
# the grades' mid ECV rises (about 0.10 intermediate, 0.27 hyperintense) onto about +70 and +190 ms.
T1_RISE_PER_ECV_MS = 700.0
T1_RISE_FACTOR_RANGE = (0.9, 1.1)
T1_ELEVATION_MS_RANGE = (50.0, 250.0)
# Blood T1 10-15 min after 0.1-0.2 mmol/kg of a gadolinium agent at 1.5 T (design brief: 300-400 ms;
# the lower part of the range, so that normal myocardium lands near the design's 450-500 ms).
BLOOD_T1_POST_MS_RANGE = (290.0, 370.0)


def t1_elevation_ms(ecv_lesion: float, ecv_remote: float, factor: float = 1.0) -> float:
    """Native T1 rise (ms, 1.5 T) of a lesion over remote myocardium from their ECVs (fractions)."""
    rise = T1_RISE_PER_ECV_MS * (ecv_lesion - ecv_remote) * factor
    return float(np.clip(rise, *T1_ELEVATION_MS_RANGE))


# Blood T1 versus hematocrit: slope of the 1.5 T synthetic-ECV relation Hct = 866 / T1 - 0.1232 (MOLLI,
# Treibel et al., JACC Cardiovasc Imaging 2016;9:54-63), with the offset moved so that Hct 0.42 gives
# the design's ShMOLLI blood value of 1500 ms.
_BLOOD_HCT_SLOPE_MS = 866.0
_BLOOD_HCT_OFFSET = _BLOOD_HCT_SLOPE_MS / 1500.0 - 0.42

# Longitudinal relaxivity of gadolinium chelates in plasma, 1.5 T vs 3 T: 4.1 vs 3.7 L/(mmol s)
# for Gd-DTPA (Rohrer et al., Invest Radiol 2005;40:715-724).
_R1_RELAXIVITY = {1.5: 4.1, 3.0: 3.7}


def blood_t1_ms(hematocrit: float, field_t: float = 1.5) -> float:
    """Apparent native blood T1 (ms) at a hematocrit (fraction): about 1500 ms at 0.42 and 1.5 T."""
    if not 0.1 < hematocrit < 0.7:
        raise ValueError(f"hematocrit {hematocrit!r} is not a plausible fraction")
    t1 = _BLOOD_HCT_SLOPE_MS / (hematocrit + _BLOOD_HCT_OFFSET)
    return t1 * (_T1_RATIO_3T["blood"] if field_t == 3.0 else 1.0)


def relaxivity_ratio(field_t: float) -> float:
    """Gadolinium r1 at `field_t` relative to 1.5 T."""
    return _R1_RELAXIVITY[field_t] / _R1_RELAXIVITY[1.5]


def blood_dr1_per_ms(blood_t1_native_ms: float, blood_t1_post_ms: float) -> float:
    """Gadolinium-induced blood R1 change (1/ms) from the native and post-contrast blood T1 (ms)."""
    if not 0 < blood_t1_post_ms < blood_t1_native_ms:
        raise ValueError("post-contrast blood T1 must be positive and shorter than native")
    return 1.0 / blood_t1_post_ms - 1.0 / blood_t1_native_ms


def post_contrast_t1_ms(
    t1_native_ms: np.ndarray | float, ecv: np.ndarray | float, hematocrit: float, dr1_blood_per_ms: float
) -> np.ndarray:
    """Post-contrast T1 (ms): R1_post = R1_native + dR1_blood * ECV / (1 - Hct).

    Blood itself is ECV = 1 - Hct (its plasma), which gives R1_post = R1_native + dR1_blood.
    """
    r1 = 1.0 / np.asarray(t1_native_ms, dtype=np.float64)
    return 1.0 / (r1 + dr1_blood_per_ms * np.asarray(ecv, dtype=np.float64) / (1.0 - hematocrit))
