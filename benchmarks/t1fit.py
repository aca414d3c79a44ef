"""T1-fit speed: a 256 x 256 slice of Bloch-simulated IR images (tubes of 200-2500 ms T1 tiled over the
whole image, noise added) fitted with `physics.t1_mapping.fit_t1_map`, per scheme and method.

Prints the median wall time (and CPU time of this process) over `--runs` fits and the load average,
which matters on shared machines::

    python benchmarks/t1fit.py --runs 5 [--size 256] [--mask 0.5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from vne_inline.physics.ir_schemes import SCHEMES
from vne_inline.physics.molli_sim import simulate_samples
from vne_inline.physics.t1_mapping import fit_t1_map
from vne_inline.physics.t1_phantom import NOISE_SD, TUBE_T1_MS, tube_t2_ms

CASES = (("shmolli", "recovery"), ("shmolli", "standard"), ("molli-533", "standard"), ("molli-3335", "standard"))


def _images(scheme: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    t1 = TUBE_T1_MS[rng.integers(0, TUBE_T1_MS.size, (size, size))]
    ti, signal = simulate_samples(t1, tube_t2_ms(t1), SCHEMES[scheme], 1000.0, 1.5)
    noise = rng.normal(0.0, NOISE_SD, (2, *signal.shape))
    return ti, np.abs(signal + noise[0] + 1j * noise[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="Image size (pixels per side).")
    parser.add_argument("--runs", type=int, default=5, help="Timed fits per case (after one warm-up).")
    parser.add_argument("--mask", type=float, default=1.0, help="Fraction of pixels fitted (a central disc).")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: args.size, : args.size] - (args.size - 1) / 2
    mask = (yy**2 + xx**2) <= args.mask * args.size**2 / np.pi if args.mask < 1 else None
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"{args.size} x {args.size} pixels, {100 * (1 if mask is None else mask.mean()):.0f} % fitted")
    for scheme, method in CASES:
        ti, images = _images(scheme, args.size, rng)
        fit_t1_map(images, ti, method=method, mask=mask)  # warm-up
        wall, cpu = [], []
        for _ in range(args.runs):
            c, w = time.process_time(), time.perf_counter()
            fit_t1_map(images, ti, method=method, mask=mask)
            wall.append(time.perf_counter() - w)
            cpu.append(time.process_time() - c)
        print(f"{SCHEMES[scheme].name:16s} {method:9s} {ti.size:2d} images: median {1000 * statistics.median(wall):.0f} ms "
              f"wall, {1000 * statistics.median(cpu):.0f} ms CPU (min {1000 * min(wall):.0f} ms)")


if __name__ == "__main__":
    main()
