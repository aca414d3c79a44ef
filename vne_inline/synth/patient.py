"""`PatientParams`: everything that makes one synthetic HCM patient, drawn deterministically from
(seed, index). Anatomy placement that depends on the drawn shape (where the torso sits around the
heart) is derived later by :mod:`vne_inline.synth.anatomy`.

Ranges are physiological; sources: HCM wall thickness >= 15 mm, septal 18-30 mm vs normal 8-10 mm,
systolic thickening 40-60 % (design brief §5; Maron, JAMA 2002;287:1308-1320); LV end-diastolic
diameter 38-58 mm in normals (Lang et al., J Am Soc Echocardiogr 2015;28:1-39), smaller in HCM; RV
free wall 3-5 mm (> 5 mm is hypertrophy: Rudski et al., J Am Soc Echocardiogr 2010;23:685-713);
long-axis shortening about 10-15 % and apical rotation about 5-15 deg (MR tagging literature; chosen);
LGE in about 60-80 % of HCM patients, typically at the RV insertion points and patchy mid-wall in
hypertrophied segments (Chan et al., Circulation 2014;130:484-495); heart rate 50-100 bpm at rest.
The acquisition domain (field strength, T1-mapping scheme, vendor-like intensity scale and T1-map
storage) is drawn from its own stream, so a mixed data set has the same anatomy as a single-domain one.
Torso, fat and organ sizes are adult anthropometric orders of magnitude (chosen).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np

from vne_inline.physics import tissue

__all__ = [
    "PHENOTYPES",
    "GRADES",
    "Bump",
    "LesionSpec",
    "HeartParams",
    "TorsoParams",
    "TissueParams",
    "ScanQuality",
    "PatientParams",
    "draw_patient",
    "rng_for",
    "study_uids",
    "Domain",
    "draw_domain",
    "MIXED",
    "T1_SCHEMES",
]

PHENOTYPES = ("asymmetric_septal", "concentric", "apical", "none")
_PHENOTYPE_P = (0.5, 0.2, 0.15, 0.15)
GRADES = ("hyperintense", "intermediate")
LGE_MISREGISTRATION_MM = 2.0  # T1 -> LGE movement above which the exam is flagged

# Independent random streams per purpose, so that e.g. changing the protocol draw never changes anatomy.
# (Anatomical irregularities use HeartParams.shape_seed, drawn from the "patient" stream.)
STREAMS = {"patient": 0, "lesions": 2, "protocol": 3, "noise": 4, "texture": 5, "domain": 6}
#: What `draw_patient` accepts for "one of each, drawn per patient".
MIXED = "mixed"
T1_SCHEMES = ("shmolli", "molli-533", "molli-3335")
# Vendor-like storage of the T1 map: float32 ms, or uint16 ms x GADGETRON_ScaleRatio (Siemens stores
# MOLLI maps as integer ms, scale 1; Gadgetron's own T1 maps carry a scale ratio).
T1_STORAGES = (("float", 1.0), ("uint16", 1.0), ("uint16", 10.0))
# Receiver/reconstruction intensity scale of the magnitude images relative to the default (vendors
# and coils differ by large factors; log-uniform over this range, chosen).
IMAGE_GAIN_RANGE = (0.25, 4.0)


def rng_for(seed: int, index: int, stream: str) -> np.random.Generator:
    """The random generator of one purpose (`STREAMS`) for patient `index` of a data set `seed`."""
    return np.random.default_rng([int(seed), int(index), STREAMS[stream]])


@dataclass(frozen=True)
class Bump:
    """Extra LV wall thickness (mm) centred at angle `theta_deg` (None: all around) and `w_mm` from the base."""

    theta_deg: float | None
    w_mm: float
    sigma_theta_deg: float
    sigma_w_mm: float
    excess_mm: float


@dataclass(frozen=True)
class LesionSpec:
    """One fibrotic lesion in ED material coordinates of the LV wall.

    kind: "insertion_anterior" / "insertion_inferior" (angle measured from that RV insertion point) or
    "midwall" (absolute angle); angles in degrees (0 = septum, +90 = inferior, -90 = anterior);
    `w_mm` from the base; `depth` 0 = endocardium, 1 = epicardium; sizes are Gaussian SDs (mm, mm,
    wall fraction) before the burden scaling; `halo`: an intermediate rim around a hyperintense core.
    """

    kind: str
    grade: str
    theta_deg: float
    w_mm: float
    depth: float
    sigma_circ_mm: float
    sigma_long_mm: float
    sigma_depth: float
    halo: bool


@dataclass(frozen=True)
class HeartParams:
    """LV/RV shape at end-diastole, orientation, position and motion.

    Heart frame: `e_long` base -> apex (azimuth from anterior towards the patient's left, elevation
    downwards); `e_sept` points from the LV axis to the RV (rotated by `roll_deg`); angles are measured
    from `e_sept` towards inferior.
    """

    base_centre_mm: tuple[float, float, float]
    azimuth_deg: float
    elevation_deg: float
    roll_deg: float
    cavity_radius_mm: float  # ED endocardial radius at the equator
    cavity_length_mm: float  # base to endocardial apex
    equator_mm: float  # distance of the ellipsoid equator from the base
    wall_mm: float  # non-hypertrophied wall thickness
    apex_wall_mm: float
    uniform_excess_mm: float  # concentric hypertrophy
    bumps: tuple[Bump, ...]
    rv_depth_mm: float
    rv_half_span_deg: float
    rv_centre_deg: float
    rv_length_fraction: float
    rv_wall_mm: float
    epicardial_fat_mm: float
    groove_fat_mm: float
    apex_fat_mm: float
    thickening: float  # systolic wall thickening fraction in normal segments
    epicardial_shrink: float  # fractional epicardial radius change in systole
    long_shortening: float  # fractional base-apex shortening in systole
    twist_deg: float  # apical rotation at end-systole
    papillary_radius_mm: float
    trabeculation_mm: float
    shape_seed: int  # seed of the small random irregularities (wall, trabeculae, fat)


@dataclass(frozen=True)
class TorsoParams:
    """Elliptic-cylinder torso and organs; positions relative to the heart are derived in `anatomy`."""

    half_width_mm: float
    half_depth_mm: float
    midline_offset_mm: float  # body midline to the right of the LV base centre (mm)
    chest_gap_mm: float  # inner chest wall to the most anterior heart surface (mm)
    subcutaneous_fat_mm: tuple[float, float, float]  # anterior, lateral, posterior
    muscle_mm: tuple[float, float, float]  # anterior, lateral, posterior
    spine_radius_mm: float
    aorta_radius_mm: float
    aorta_offset_mm: float  # left of the midline
    liver_split_mm: float  # liver / left abdomen boundary, left of the midline
    right_dome_mm: float  # right hemidiaphragm dome above the central tendon
    left_dome_mm: float
    diaphragm_gap_mm: float  # central tendon below the lowest heart surface


@dataclass(frozen=True)
class TissueParams:
    """Per-patient tissue values: hematocrit, remote native T1 (ms), ECV by grade, contrast state."""

    hematocrit: float
    myo_t1_ms: float
    ecv_remote: float
    ecv_intermediate: float
    ecv_hyperintense: float
    t1_elevation_intermediate_ms: float  # 1.5 T; scaled with the myocardial T1 at 3 T
    t1_elevation_hyperintense_ms: float
    blood_t1_post_ms: float  # 1.5 T equivalent, scaled by relaxivity at 3 T


@dataclass(frozen=True)
class ScanQuality:
    """Noise, patient movement between scans and artefacts.

    SNRs: cine blood SNR, IR-image SNR of unit proton density, LGE blood SNR (at unit coil gain).
    Movement (mm, patient coordinates) shifts the anatomy, not the planes, relative to the cine: 0-5 mm
    from cine to T1 mapping; from T1 mapping to LGE 0-1.5 mm in most patients and 2.5-5 mm in a minority
    (flagged `lge_misregistered`: lesion masks drawn on the T1 grid then miss the LGE lesions).
    """

    cine_snr: float
    t1_snr: float
    lge_snr: float
    t1_shift_mm: tuple[float, float, float]
    lge_shift_mm: tuple[float, float, float]
    t1_slice_jitter_mm: tuple[tuple[float, float, float], ...]  # per T1 slice (separate breath-holds)
    lge_ti_error_ms: float  # 0: TI nulls remote myocardium
    lge_ghost_mm: float  # 0: no breathing ghosts; else respiratory displacement amplitude
    t1_motion_mm: tuple[float, float, float]  # zero: no motion between IR images

    @property
    def flags(self) -> dict[str, bool]:
        """Artefact flags as stored in truth.h5."""
        return {
            "lge_wrong_ti": self.lge_ti_error_ms != 0.0,
            "lge_ghosts": self.lge_ghost_mm > 0.0,
            "t1_motion": any(v != 0.0 for v in self.t1_motion_mm),
            "lge_misregistered": float(np.linalg.norm(np.subtract(self.lge_shift_mm, self.t1_shift_mm))) > LGE_MISREGISTRATION_MM,
        }


@dataclass(frozen=True)
class Domain:
    """How the exam was acquired and stored: field strength (T), T1-mapping scheme (a key of
    `physics.ir_sampling.SCHEMES`), T1-map storage ("float" or "uint16") and its scale ratio, and the
    intensity scale of the magnitude images (cine and IR images; 1 = default)."""

    field_t: float
    t1_scheme: str
    t1_storage: str
    t1_scale_ratio: float
    image_gain: float


def draw_domain(seed: int, index: int, field_t: float | str = 1.5, t1_scheme: str = "shmolli") -> Domain:
    """The acquisition domain of patient `index`: `field_t` 1.5, 3 or "mixed" (either, equally likely),
    `t1_scheme` a scheme or "mixed" (each equally likely); storage and image scale always drawn."""
    rng = rng_for(seed, index, "domain")
    fields = tissue.FIELDS_T if field_t == MIXED else (field_t,)
    schemes = T1_SCHEMES if t1_scheme == MIXED else (t1_scheme,)
    f = float(fields[int(rng.integers(len(fields)))])
    scheme = str(schemes[int(rng.integers(len(schemes)))])
    if f not in tissue.FIELDS_T:
        raise ValueError(f"field strength must be one of {tissue.FIELDS_T} T or {MIXED!r}, got {field_t!r}")
    if scheme not in T1_SCHEMES:
        raise ValueError(f"T1 scheme must be one of {T1_SCHEMES} or {MIXED!r}, got {t1_scheme!r}")
    storage, ratio = T1_STORAGES[int(rng.integers(len(T1_STORAGES)))]
    gain = float(np.exp(rng.uniform(*np.log(IMAGE_GAIN_RANGE))))
    return Domain(f, scheme, storage, ratio, gain)


@dataclass(frozen=True)
class PatientParams:
    """One synthetic patient (JSON-serialisable through `to_dict`)."""

    seed: int
    index: int
    field_t: float
    domain: Domain
    patient_id: str
    phenotype: str
    rr_ms: float
    cine_phases: int
    target_burden: float  # lesion volume / LV myocardial volume aimed at (achieved value: anatomy)
    heart: HeartParams
    torso: TorsoParams
    tissue: TissueParams
    lesions: tuple[LesionSpec, ...]
    quality: ScanQuality

    def to_dict(self) -> dict:
        return asdict(self)


def _unit_vector(rng: np.random.Generator, weights=(1.0, 1.0, 1.0)) -> np.ndarray:
    v = rng.standard_normal(3) * np.asarray(weights)
    return v / np.linalg.norm(v)


def _draw_heart(rng: np.random.Generator, phenotype: str) -> HeartParams:
    u = rng.uniform
    hcm = phenotype != "none"
    wall = u(8.0, 11.0) if hcm else u(7.0, 10.0)
    length = u(70.0, 88.0)
    bumps: list[Bump] = []
    uniform_excess = 0.0
    apex_wall = u(5.0, 8.0)
    if phenotype == "asymmetric_septal":
        max_septal = u(18.0, 30.0)
        bumps.append(Bump(u(-30.0, 5.0), u(0.2, 0.45) * length, u(35.0, 55.0), u(15.0, 28.0), max_septal - wall))
        if rng.random() < 0.5:  # extension into the anterior wall
            bumps.append(Bump(u(-100.0, -60.0), u(0.2, 0.5) * length, u(20.0, 35.0), u(12.0, 20.0), u(0.3, 0.6) * (max_septal - wall)))
    elif phenotype == "concentric":
        uniform_excess = u(15.0, 21.0) - wall
        bumps.append(Bump(u(-20.0, 20.0), u(0.2, 0.4) * length, u(50.0, 70.0), u(20.0, 30.0), u(1.0, 4.0)))
    elif phenotype == "apical":
        apex_wall = u(12.0, 20.0)
        bumps.append(Bump(None, length, 0.0, u(14.0, 22.0), u(15.0, 25.0) - wall))
    return HeartParams(
        base_centre_mm=(u(-5.0, 10.0), u(-10.0, 5.0), u(-8.0, 8.0)),
        azimuth_deg=u(35.0, 55.0),
        elevation_deg=u(28.0, 45.0),
        roll_deg=u(-12.0, 12.0),
        cavity_radius_mm=u(19.0, 24.0) if hcm else u(22.0, 26.0),
        cavity_length_mm=length,
        equator_mm=u(10.0, 22.0),
        wall_mm=wall,
        apex_wall_mm=apex_wall,
        uniform_excess_mm=uniform_excess,
        bumps=tuple(bumps),
        rv_depth_mm=u(18.0, 28.0),
        rv_half_span_deg=u(65.0, 80.0),
        rv_centre_deg=u(-15.0, 0.0),
        rv_length_fraction=u(0.72, 0.88),
        rv_wall_mm=u(3.0, 5.0),
        epicardial_fat_mm=u(0.3, 1.5),
        groove_fat_mm=u(3.0, 9.0),
        apex_fat_mm=u(2.0, 12.0),
        thickening=u(0.4, 0.6),
        epicardial_shrink=u(0.04, 0.08),
        long_shortening=u(0.08, 0.15),
        twist_deg=u(6.0, 14.0),
        papillary_radius_mm=u(4.0, 6.5),
        trabeculation_mm=u(1.5, 3.5),
        shape_seed=int(rng.integers(2**31)),
    )


def _draw_lesions(rng: np.random.Generator, phenotype: str, heart: HeartParams) -> tuple[float, tuple[LesionSpec, ...]]:
    """Target burden and lesion list: about a fifth of HCM patients (most without hypertrophy) have none."""
    p_none = 0.6 if phenotype == "none" else 0.2
    if rng.random() < p_none:
        return 0.0, ()
    u = rng.uniform
    burden = 0.01 + (0.04 if phenotype == "none" else 0.39) * rng.random() ** 2.2
    length = heart.cavity_length_mm
    lesions: list[LesionSpec] = []
    for kind in ("insertion_anterior", "insertion_inferior"):
        if rng.random() < 0.7 or (kind == "insertion_inferior" and not lesions):
            lesions.append(
                LesionSpec(kind, GRADES[int(rng.random() < 0.5)], u(-6.0, 6.0), u(0.15, 0.6) * length,
                           u(0.45, 0.75), u(4.0, 8.0), u(8.0, 20.0), u(0.25, 0.4), halo=bool(rng.random() < 0.5))
            )
    n_patch = 0 if phenotype == "none" else int(rng.poisson(1.0 + 8.0 * burden))
    hyper = [b for b in heart.bumps if b.excess_mm > 4.0]
    for _ in range(n_patch):
        if hyper:
            b = hyper[int(rng.integers(len(hyper)))]
            theta = u(-180.0, 180.0) if b.theta_deg is None else b.theta_deg + 0.6 * b.sigma_theta_deg * rng.standard_normal()
            w = float(np.clip(b.w_mm + 0.6 * b.sigma_w_mm * rng.standard_normal(), 5.0, length))
        else:  # concentric: anywhere in the (hypertrophied) wall
            theta, w = u(-180.0, 180.0), u(0.1, 0.85) * length
        lesions.append(
            LesionSpec("midwall", GRADES[int(rng.random() < 0.45)], float(theta), float(w), u(0.3, 0.7),
                       u(4.0, 12.0), u(4.0, 12.0), u(0.15, 0.3), halo=bool(rng.random() < 0.6))
        )
    return float(burden), tuple(lesions)


def _draw_torso(rng: np.random.Generator) -> TorsoParams:
    u = rng.uniform
    return TorsoParams(
        half_width_mm=u(160.0, 200.0),
        half_depth_mm=u(110.0, 140.0),
        midline_offset_mm=u(5.0, 25.0),
        chest_gap_mm=u(3.0, 15.0),
        subcutaneous_fat_mm=(u(6.0, 28.0), u(8.0, 30.0), u(8.0, 25.0)),
        muscle_mm=(u(8.0, 16.0), u(8.0, 14.0), u(28.0, 42.0)),
        spine_radius_mm=u(16.0, 21.0),
        aorta_radius_mm=u(10.0, 14.0),
        aorta_offset_mm=u(15.0, 30.0),
        liver_split_mm=u(0.0, 40.0),
        right_dome_mm=u(10.0, 25.0),
        left_dome_mm=u(0.0, 10.0),
        diaphragm_gap_mm=u(0.0, 4.0),
    )


def _draw_tissue(rng: np.random.Generator) -> TissueParams:
    u = rng.uniform
    # Remote T1 ~ N(962, 25) ms (Piechnik 2013), clipped to +/- 2 SD.
    myo_t1 = tissue.tissue_table(1.5)["myocardium"].t1_ms + float(np.clip(rng.standard_normal(), -2, 2)) * tissue.MYO_T1_SD_MS
    ecv_remote = u(*tissue.ECV_REMOTE_RANGE)
    lo, hi = tissue.ECV_INTERMEDIATE_RANGE
    hematocrit = u(*tissue.HEMATOCRIT_RANGE)
    ecv_intermediate = u(max(lo, ecv_remote + tissue.ECV_INTERMEDIATE_MIN_RISE), hi)
    ecv_hyperintense = u(*tissue.ECV_HYPERINTENSE_RANGE)
    factor_intermediate, factor_hyperintense = u(*tissue.T1_RISE_FACTOR_RANGE, size=2)
    return TissueParams(
        hematocrit=hematocrit,
        myo_t1_ms=myo_t1,
        ecv_remote=ecv_remote,
        ecv_intermediate=ecv_intermediate,
        ecv_hyperintense=ecv_hyperintense,
        t1_elevation_intermediate_ms=tissue.t1_elevation_ms(ecv_intermediate, ecv_remote, factor_intermediate),
        t1_elevation_hyperintense_ms=tissue.t1_elevation_ms(ecv_hyperintense, ecv_remote, factor_hyperintense),
        blood_t1_post_ms=u(*tissue.BLOOD_T1_POST_MS_RANGE),
    )


def _shift(rng: np.random.Generator, lo_mm: float, hi_mm: float) -> np.ndarray:
    """A breath-hold position change (mm): mostly head-feet (direction weights x 0.5, y 0.6, z 1),
    magnitude uniform in [lo_mm, hi_mm]."""
    return _unit_vector(rng, (0.5, 0.6, 1.0)) * rng.uniform(lo_mm, hi_mm)


def _mm(v: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(x) for x in v)


def _draw_quality(rng: np.random.Generator) -> ScanQuality:
    u = rng.uniform
    wrong_ti = rng.random() < 0.12
    ghosts = rng.random() < 0.12
    t1_motion = rng.random() < 0.15
    t1_shift = _shift(rng, 0.0, 5.0)  # cine -> T1 mapping
    misregistered = rng.random() < 0.12
    lge_shift = t1_shift + (_shift(rng, 2.5, 5.0) if misregistered else _shift(rng, 0.0, 1.5))  # T1 -> LGE
    return ScanQuality(
        cine_snr=u(25.0, 50.0),
        t1_snr=u(25.0, 50.0),
        lge_snr=u(20.0, 40.0),
        t1_shift_mm=_mm(t1_shift),
        lge_shift_mm=_mm(lge_shift),
        t1_slice_jitter_mm=tuple(_mm(_shift(rng, 0.0, 1.0)) for _ in range(3)),
        lge_ti_error_ms=float(rng.choice([-1.0, 1.0]) * u(40.0, 90.0)) if wrong_ti else 0.0,
        lge_ghost_mm=u(2.0, 6.0) if ghosts else 0.0,
        t1_motion_mm=_mm(_shift(rng, 2.0, 5.0)) if t1_motion else (0.0, 0.0, 0.0),
    )


def draw_patient(seed: int, index: int, field_t: float | str = 1.5, t1_scheme: str = "shmolli") -> PatientParams:
    """The patient `index` of the data set `seed` (same arguments -> identical parameters); `field_t`
    and `t1_scheme` as in :func:`draw_domain`."""
    domain = draw_domain(seed, index, field_t, t1_scheme)
    rng = rng_for(seed, index, "patient")
    phenotype = str(rng.choice(PHENOTYPES, p=_PHENOTYPE_P))
    heart = _draw_heart(rng, phenotype)
    torso = _draw_torso(rng)
    tissue_params = _draw_tissue(rng)
    rr_ms = 60000.0 / rng.uniform(50.0, 100.0)
    cine_phases = int(rng.integers(25, 31))
    quality = _draw_quality(rng)
    burden, lesions = _draw_lesions(rng_for(seed, index, "lesions"), phenotype, heart)
    return PatientParams(
        seed=int(seed),
        index=int(index),
        field_t=domain.field_t,
        domain=domain,
        patient_id=f"SYN{_digest('patient', seed, index) % 10**8:08d}",
        phenotype=phenotype,
        rr_ms=float(rr_ms),
        cine_phases=cine_phases,
        target_burden=burden,
        heart=heart,
        torso=torso,
        tissue=tissue_params,
        lesions=lesions,
        quality=quality,
    )


def _digest(*parts: object) -> int:
    """A 128-bit integer from a one-way hash of `parts` (deterministic identifiers)."""
    return int.from_bytes(hashlib.sha256(("vne-synth/" + "/".join(map(str, parts))).encode()).digest()[:16], "big")


def study_uids(seed: int, index: int) -> tuple[str, str]:
    """Deterministic DICOM UIDs ("2.25.<decimal>", a UUID-derived root) of the study and its frame of reference."""
    return f"2.25.{_digest('study', seed, index)}", f"2.25.{_digest('frame', seed, index)}"
