"""Input-domain check per VNE: is a slice like the data the model was trained on? (pure numpy)

A model carries a :class:`TrainingDomain` in its configuration (``ModelConfig.domain``, JSON): the
field strengths, T1-mapping schemes and IR-image counts it was trained on and, per field strength,
the range (1st-99th percentile over the training slices) of a few per-slice statistics of the inputs
(:func:`slice_statistics`). Each slice is checked against it (:func:`check_domain`):

- ``fail``: a field strength the model never saw (from the ISMRMRD header), fewer than
  :data:`MIN_IR_IMAGES` IR images, or a T1 statistic far outside its range (beyond half the range's
  width past either end);
- ``warn``: an IR-image count (scheme) the model never saw, a statistic outside its range, an unknown
  field strength that no trained field's ranges fit, or a model without a domain description;
- ``pass`` otherwise.

Statistics, over the pixels of a disc of :data:`DISC_RADIUS_MM` around the image centre (cardiac
planning centres the heart) whose T1 lies in (100, 3000) ms: the median and the 90th percentile of
T1 (myocardium and blood dominate them; both scale with field strength: Dabir et al., JCMR
2014;16:69) and the mean of the normalised IR images (the model's own input scale).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["TrainingDomain", "DomainCheck", "slice_statistics", "check_domain", "build_domain", "STATISTICS",
           "DISC_RADIUS_MM", "MIN_IR_IMAGES"]

DISC_RADIUS_MM = 60.0
MIN_IR_IMAGES = 5  # fewer IR images than this do not describe a recovery curve the model knows
T1_WINDOW_MS = (100.0, 3000.0)
#: Statistic name -> description (units) for reasons.
STATISTICS = {"t1_median_ms": "T1 median (ms)", "t1_p90_ms": "T1 90th percentile (ms)", "ir_mean": "IR mean (normalised)"}
STATUSES = ("pass", "warn", "fail")
#: Statistics in physical units (ms): far outside their range they fail; the others only warn (image
#: intensity statistics also depend on what the field of view holds).
QUANTITATIVE = ("t1_median_ms", "t1_p90_ms")


@dataclass(frozen=True)
class TrainingDomain:
    """What a model was trained on; `ranges[field][statistic] = (low, high)` with fields as "1.5", "3"."""

    fields_t: tuple[float, ...]
    n_ir_images: tuple[int, ...]
    schemes: tuple[str, ...] = ()
    ranges: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainingDomain:
        raw = json.loads(text)
        ranges = {f: {k: (float(v[0]), float(v[1])) for k, v in stats.items()} for f, stats in raw.get("ranges", {}).items()}
        return cls(tuple(float(f) for f in raw["fields_t"]), tuple(int(k) for k in raw["n_ir_images"]),
                   tuple(raw.get("schemes", ())), ranges)


@dataclass(frozen=True)
class DomainCheck:
    status: str  # pass | warn | fail
    reasons: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "inputs within the training domain"


def _field_key(field_t: float) -> str:
    return f"{field_t:g}"


def slice_statistics(t1_ms: np.ndarray, ir_normalised: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> dict[str, float]:
    """The domain statistics of one slice: T1 map (H, W) in ms, normalised IR images (K, H, W), pixel
    spacing (dx, dy) in mm. NaN statistics when the disc holds no tissue."""
    t1 = np.asarray(t1_ms, dtype=np.float64)
    h, w = t1.shape
    dx, dy = pixel_spacing_mm
    yy, xx = np.mgrid[0:h, 0:w]
    disc = ((xx + 0.5 - w / 2) * dx) ** 2 + ((yy + 0.5 - h / 2) * dy) ** 2 <= DISC_RADIUS_MM**2
    tissue = disc & np.isfinite(t1) & (t1 > T1_WINDOW_MS[0]) & (t1 < T1_WINDOW_MS[1])
    if tissue.sum() < 50:
        return dict.fromkeys(STATISTICS, float("nan"))
    values = t1[tissue]
    ir = np.asarray(ir_normalised, dtype=np.float64)
    return {"t1_median_ms": float(np.median(values)), "t1_p90_ms": float(np.percentile(values, 90)),
            "ir_mean": float(ir[:, tissue].mean())}


def build_domain(samples: list[tuple[float, int, str, dict[str, float]]]) -> TrainingDomain:
    """A domain from training slices (field T, IR-image count, scheme, statistics)."""
    if not samples:
        raise ValueError("no training slices to describe")
    ranges: dict[str, dict[str, tuple[float, float]]] = {}
    for f in sorted({s[0] for s in samples}):
        stats = [s[3] for s in samples if s[0] == f]
        ranges[_field_key(f)] = {}
        for name in STATISTICS:
            v = np.array([s[name] for s in stats], dtype=np.float64)
            v = v[np.isfinite(v)]
            if v.size:
                ranges[_field_key(f)][name] = (float(np.percentile(v, 1)), float(np.percentile(v, 99)))
    return TrainingDomain(tuple(sorted({float(s[0]) for s in samples})), tuple(sorted({int(s[1]) for s in samples})),
                          tuple(sorted({s[2] for s in samples if s[2]})), ranges)


def _range_verdicts(ranges: dict[str, tuple[float, float]], stats: dict[str, float], where: str) -> list[tuple[str, str]]:
    out = []
    for name, (lo, hi) in ranges.items():
        v = stats.get(name, float("nan"))
        if not np.isfinite(v) or lo <= v <= hi:
            continue
        slack = 0.5 * (hi - lo)
        far = v < lo - slack or v > hi + slack
        status = "fail" if far and name in QUANTITATIVE else "warn"
        out.append((status, f"{STATISTICS[name]} {v:.4g} outside the training range {lo:.4g}-{hi:.4g}{where}"))
    return out


def check_domain(domain: TrainingDomain | None, field_t: float | None, n_ir: int, stats: dict[str, float]) -> DomainCheck:
    """The verdict for one slice (module docstring); `field_t` None when the header does not say."""
    verdicts: list[tuple[str, str]] = []
    if n_ir < MIN_IR_IMAGES:
        verdicts.append(("fail", f"{n_ir} IR images (the model needs at least {MIN_IR_IMAGES})"))
    if domain is None:
        verdicts.append(("warn", "the model carries no training-domain description"))
    else:
        trained = ", ".join(f"{f:g} T" for f in domain.fields_t)
        if n_ir >= MIN_IR_IMAGES and n_ir not in domain.n_ir_images:
            verdicts.append(("warn", f"{n_ir} IR images: trained on {', '.join(map(str, domain.n_ir_images))}"))
        if field_t is not None and float(field_t) not in domain.fields_t:
            verdicts.append(("fail", f"field strength {field_t:g} T outside the training domain ({trained})"))
        elif field_t is not None:
            verdicts += _range_verdicts(domain.ranges.get(_field_key(field_t), {}), stats, f" at {field_t:g} T")
        else:
            fits = {f: _range_verdicts(r, stats, "") for f, r in domain.ranges.items()}
            if fits and not any(not v for v in fits.values()):
                verdicts.append(("warn", f"field strength unknown and no trained field's ranges fit ({trained})"))
    if not verdicts:
        return DomainCheck("pass")
    worst = max(STATUSES.index(s) for s, _ in verdicts)
    return DomainCheck(STATUSES[worst], tuple(text for _, text in verdicts))
