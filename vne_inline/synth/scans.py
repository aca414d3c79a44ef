"""The three scans of a synthetic exam, each sampled on its own planes from the one anatomy.

- CINE bSSFP: 25-30 phases over the RR interval, signal PD sqrt(T2/T1), magnitude (Rician noise), uint16.
- T1 MAPPING ShMOLLI, MOLLI 5(3)3 or MOLLI 3(3)3(3)5: 7, 8 or 11 IR-weighted magnitude images in
  acquisition order (`physics.ir_sampling`, incomplete recovery between inversions included) summed as
  signed signals over the partial volume, Rician noise, uint16. The map is what the scanner's fit
  reports: MOLLI, the standard three-parameter fit with Look-Locker correction of all images
  (`physics.t1.fit_t1`, Messroghli et al., MRM 2004;52:141-146, which carries MOLLI's known heart-rate
  and long-T1 bias); ShMOLLI, whose single recovery beat rules out that fit, a model-based fit of the
  same sampling (`physics.ir_sampling.fit_scheme_t1`). Float32 ms. Optional motion between inversions.
- LGE PSIR: TI nulling remote myocardium (or wrong by 40-90 ms), real part kept (signed, Gaussian
  noise), optional breathing ghosts, float32.

All images carry the receive-coil shading and a mild tissue texture (fixed to the anatomy) and go
through `acquisition.acquire` (limited k-space resolution, noise on the acquired samples).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vne_inline.geometry import SliceGeometry
from vne_inline.physics.ir_sampling import fit_scheme_t1, sampling
from vne_inline.physics.t1 import fit_t1
from vne_inline.synth.acquisition import Resolution, acquire
from vne_inline.synth.anatomy import Anatomy
from vne_inline.synth.coils import CoilArray
from vne_inline.synth.contrast import (
    PSIR_CYCLE_RR,
    Components,
    bssfp_signal,
    build_components,
    ir_signals,
    null_ti_ms,
    psir_signal,
)
from vne_inline.synth.fields import PlaneWaves
from vne_inline.synth.heart import diastasis_phase
from vne_inline.synth.patient import rng_for
from vne_inline.synth.sampling import PixelMix, StackSampler

__all__ = ["ExamContext", "CineScan", "T1Scan", "LgeScan", "simulate_cine", "simulate_t1", "simulate_lge", "lge_ti_ms", "lge_signal", "LGE_GAIN"]

TEXTURE_AMPLITUDE = 0.03  # relative SD of the tissue texture
CINE_GAIN = 1000.0  # uint16 value of blood at unit coil gain
T1_GAIN = 2000.0  # uint16 value of unit proton density at TI -> infinity and unit coil gain
LGE_GAIN = 1000.0  # float value of unit proton density, fully recovered
T1_FIT_MIN_SNR = 4.0  # fit only pixels whose brightest IR image exceeds this many noise SDs
T1_FIT_MIN_FRACTION = 0.12  # ... and this fraction of the bright tissue (leaves air and most lung unfitted)


@dataclass(frozen=True)
class ExamContext:
    """What every scan of one exam shares: anatomy, component table, coil array, texture."""

    anatomy: Anatomy
    components: Components
    coil: CoilArray
    texture: PlaneWaves

    @classmethod
    def build(cls, anatomy: Anatomy) -> ExamContext:
        p = anatomy.params
        texture = PlaneWaves.draw(rng_for(p.seed, p.index, "texture"), 32, (8.0, 30.0))
        return cls(anatomy, build_components(p), CoilArray.for_anatomy(anatomy), texture)

    def shading(self, geometry: SliceGeometry, anatomy_points: np.ndarray) -> np.ndarray:
        """Coil gain at the pixel centres times the tissue texture at the anatomy points (P,)."""
        coil = self.coil(geometry.pixel_centres().reshape(-1, 3))
        return coil * (1.0 + TEXTURE_AMPLITUDE * self.texture(anatomy_points))

    def shadings(self, stack: StackSampler) -> list[np.ndarray]:
        """`shading` of every slice of a stack."""
        return [self.shading(g, pts) for g, pts in zip(stack.geometries, stack.anatomy_points, strict=True)]

    def image(self, mix: PixelMix, signal: np.ndarray, shade: np.ndarray) -> np.ndarray:
        """Noiseless signal (P,) or (K, P) of a pixel mixture for per-component `signal` (C,) or (C, K)."""
        return self.components.mix_signal(mix, signal) * shade


@dataclass(frozen=True)
class CineScan:
    """Cine images of every slice and phase on their planes."""

    geometries: tuple[SliceGeometry, ...]
    images: np.ndarray  # (slices, phases, ny, nx) uint16
    trigger_ms: np.ndarray  # (phases,)


@dataclass(frozen=True)
class T1Scan:
    """IR images and fitted T1 maps of one scheme, plus what the ground truth needs."""

    geometries: tuple[SliceGeometry, ...]
    scheme: str  # a key of physics.ir_sampling.SCHEMES
    ti_ms: np.ndarray  # (K,) acquisition order
    ir_images: np.ndarray  # (slices, K, ny, nx) uint16
    t1_maps: np.ndarray  # (slices, ny, nx) float32 ms, 0 where not fitted
    mixes: tuple[PixelMix, ...]  # per slice, the anatomy during the first inversion (ground truth)
    shadings: tuple[np.ndarray, ...]  # per slice, coil gain x texture (P,)


@dataclass(frozen=True)
class LgeScan:
    """PSIR LGE images and the TI used."""

    geometries: tuple[SliceGeometry, ...]
    images: np.ndarray  # (slices, ny, nx) float32, signed
    ti_ms: float  # TI used
    ti_nominal_ms: float  # TI that nulls remote myocardium
    mixes: tuple[PixelMix, ...]  # per slice, the anatomy during the LGE scan (ground truth)


def _uint16(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 65535).astype(np.uint16)


def _blood(c: Components) -> int:
    return c.names.index("blood")


def simulate_cine(ctx: ExamContext, geometries: tuple[SliceGeometry, ...], resolution: Resolution, rng: np.random.Generator) -> CineScan:
    """ED-triggered retrospective cine: phase j at j/F of the RR interval; magnitude images."""
    p = ctx.anatomy.params
    signal = bssfp_signal(ctx.components)
    gain = CINE_GAIN * p.domain.image_gain / signal[_blood(ctx.components)]
    sigma = signal[_blood(ctx.components)] / p.quality.cine_snr
    phases = np.arange(p.cine_phases) / p.cine_phases
    stack = StackSampler(ctx.anatomy, geometries, (0.0, 0.0, 0.0), tight=True)
    shades = ctx.shadings(stack)
    boxes = stack.boxes()
    frames = [np.repeat(ctx.image(m, signal, sh)[None], len(phases), axis=0) for m, sh in zip(stack.static_mixes(), shades, strict=True)]
    for j, phase in enumerate(phases):
        for i, mix in enumerate(stack.box_mixes(phase)):
            frames[i][j, boxes[i]] = ctx.image(mix, signal, shades[i][boxes[i]])
    out = np.empty((len(geometries), len(phases), *geometries[0].shape), dtype=np.uint16)
    for i, g in enumerate(geometries):
        out[i] = _uint16(gain * np.abs(acquire(frames[i].reshape(-1, *g.shape), resolution, sigma, rng)))
    return CineScan(geometries, out, phases * p.rr_ms)


def simulate_t1(ctx: ExamContext, geometries: tuple[SliceGeometry, ...], resolution: Resolution, rng: np.random.Generator) -> T1Scan:
    """T1 mapping at mid-diastole with the patient's scheme, one breath-hold per slice; the map fitted
    from the noisy magnitude images (module docstring)."""
    p = ctx.anatomy.params
    q = p.quality
    s = sampling(p.domain.t1_scheme, p.rr_ms)
    signal = ir_signals(ctx.components, s)
    sigma = 1.0 / q.t1_snr
    gain = T1_GAIN * p.domain.image_gain
    phase = diastasis_phase(p.rr_ms)
    shifts = np.asarray(q.t1_shift_mm) + np.asarray(q.t1_slice_jitter_mm)
    stack = StackSampler(ctx.anatomy, geometries, shifts)
    mixes, shades = stack.mixes(phase), ctx.shadings(stack)
    signed = [ctx.image(m, signal, sh) for m, sh in zip(mixes, shades, strict=True)]
    if any(q.t1_motion_mm):  # the later inversions see the heart moved
        moved = StackSampler(ctx.anatomy, geometries, shifts + np.asarray(q.t1_motion_mm))
        late = np.flatnonzero(s.inversion > 0)
        for k, (m, sh) in enumerate(zip(moved.mixes(phase), ctx.shadings(moved), strict=True)):
            signed[k][late] = ctx.image(m, signal, sh)[late]
    images, maps = [], []
    for g, sig in zip(geometries, signed, strict=True):
        ir = _uint16(gain * np.abs(acquire(sig.reshape(len(s.ti_ms), *g.shape), resolution, sigma, rng)))
        brightest = ir.max(axis=0)
        mask = brightest > max(T1_FIT_MIN_SNR * sigma * gain, T1_FIT_MIN_FRACTION * float(np.percentile(brightest, 99)))
        if s.scheme == "shmolli":
            t1 = fit_scheme_t1(ir, s, mask)
        else:
            t1 = fit_t1(ir.astype(np.float64), s.ti_ms, magnitude=True, mask=mask).t1_ms
        images.append(ir)
        maps.append(np.nan_to_num(t1, nan=0.0).astype(np.float32))
    return T1Scan(geometries, s.scheme, s.ti_ms, np.stack(images), np.stack(maps), tuple(mixes), tuple(shades))


def lge_ti_ms(ctx: ExamContext) -> float:
    """The TI (ms) that nulls the patient's remote myocardium."""
    c = ctx.components
    return null_ti_ms(float(c.t1_post_ms[c.names.index("myocardium")]), PSIR_CYCLE_RR * ctx.anatomy.params.rr_ms)


def lge_signal(ctx: ExamContext, ti_ms: float) -> np.ndarray:
    """Per-component PSIR signal (C,) at `ti_ms`."""
    return psir_signal(ctx.components, ti_ms, PSIR_CYCLE_RR * ctx.anatomy.params.rr_ms)


def simulate_lge(ctx: ExamContext, geometries: tuple[SliceGeometry, ...], resolution: Resolution, rng: np.random.Generator) -> LgeScan:
    """PSIR LGE at mid-diastole 10-15 min after contrast, anatomy moved by the LGE breath-hold shift;
    the phase-corrected real part is kept (signed)."""
    p = ctx.anatomy.params
    q = p.quality
    ti_nominal = lge_ti_ms(ctx)
    ti = ti_nominal + q.lge_ti_error_ms
    signal = lge_signal(ctx, ti)
    sigma = float(lge_signal(ctx, ti_nominal)[_blood(ctx.components)]) / q.lge_snr
    phase = diastasis_phase(p.rr_ms)
    stack = StackSampler(ctx.anatomy, geometries, q.lge_shift_mm)
    out = np.empty((len(geometries), *geometries[0].shape), dtype=np.float32)
    mixes = stack.mixes(phase)
    for i, (g, mix, shade) in enumerate(zip(geometries, mixes, ctx.shadings(stack), strict=True)):
        image = ctx.image(mix, signal, shade).reshape(g.shape)
        out[i] = LGE_GAIN * acquire(image, resolution, sigma, rng, q.lge_ghost_mm, g.pixel_spacing[1]).real
    return LgeScan(geometries, out, float(ti), float(ti_nominal), tuple(mixes))
