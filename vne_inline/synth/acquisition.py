"""k-space acquisition of a noiseless image: limited resolution (truncated k-space, hence blurring and
Gibbs ringing), complex Gaussian noise on the acquired samples only (hence correlated noise after
zero-filled reconstruction) and optional respiratory ghosts along the phase-encoding direction.

Images are (..., ny, nx) with rows along the phase-encoding direction (design §3: phase_dir along y).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Resolution", "acquire"]


@dataclass(frozen=True)
class Resolution:
    """Acquired fraction of the reconstructed k-space extent along read (x) and phase (y)."""

    read: float
    phase: float

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Boolean (ny, nx) of the acquired k-space samples (numpy FFT order)."""
        ny, nx = shape
        ky = np.abs(np.fft.fftfreq(ny)) <= 0.5 * self.phase + 1e-9
        kx = np.abs(np.fft.fftfreq(nx)) <= 0.5 * self.read + 1e-9
        return ky[:, None] & kx[None, :]


def _ghost_phase(ny: int, dy_mm: float, amplitude_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Per-line phase factors (ny, 1) of a rigid respiratory displacement along the phase direction:
    segmented, centre-out line ordering over a few breaths."""
    ky = np.fft.fftfreq(ny, d=dy_mm)  # cycles / mm
    order = np.argsort(np.abs(np.fft.fftfreq(ny)), kind="stable")
    shot = np.empty(ny)
    shot[order] = np.arange(ny) / ny
    disp = amplitude_mm * np.sin(2 * np.pi * rng.uniform(2.0, 5.0) * shot + rng.uniform(0, 2 * np.pi))
    return np.exp(-2j * np.pi * ky * disp)[:, None]


def acquire(
    images: np.ndarray,
    resolution: Resolution,
    sigma: float,
    rng: np.random.Generator,
    ghost_mm: float = 0.0,
    dy_mm: float = 1.0,
) -> np.ndarray:
    """Complex reconstructed images (..., ny, nx) of real noiseless `images` at `resolution`, with
    image-domain noise SD `sigma` (per real and imaginary part) and optional ghosts of `ghost_mm`
    respiratory amplitude (pixel height `dy_mm`)."""
    shape = images.shape[-2:]
    mask = resolution.mask(shape)
    k = np.fft.fft2(np.asarray(images, dtype=np.float32), norm="ortho")  # complex64
    if ghost_mm > 0:
        k *= _ghost_phase(shape[0], dy_mm, ghost_mm, rng).astype(np.complex64)
    k *= mask
    # noise on the acquired samples, scaled so that the zero-filled image has SD sigma per channel
    scale = np.float32(sigma / np.sqrt(mask.mean()))
    size = (*k.shape[:-2], int(mask.sum()))
    k[..., mask] += scale * (rng.standard_normal(size, dtype=np.float32) + 1j * rng.standard_normal(size, dtype=np.float32))
    return np.fft.ifft2(k, norm="ortho")
