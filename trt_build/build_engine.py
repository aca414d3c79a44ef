#!/usr/bin/env python3
"""Build the TensorRT engine for a vne-inline ONNX model on this machine's GPU, before any scan.

The engine goes into the cache the scanner-side backend reads (``$VNE_INLINE_ENGINE_CACHE`` or
``~/.cache/vne-inline/tensorrt``), keyed by the ONNX file, TensorRT version, GPU and profile, so the
inline backend finds it without building. With ``--verify`` the engine's output on one random batch
is compared with ONNX Runtime's on the float32 model (``x.onnx`` for ``x.fp16.onnx``, else the same file). The optimisation profile is the backend's:
batch 1-8, H and W 64-512 pixels, tuned for one 256 x 256 slice. See trt_build/README.md.

    python trt_build/build_engine.py --onnx vne_inline/weights/default.fp16.onnx --verify
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from vne_inline.infer.base import BackendError
from vne_inline.infer.select import FP16_SUFFIX
from vne_inline.infer.tensorrt import EngineOptions, TensorRTBackend, default_cache_dir

#: Largest accepted relative difference max|trt - ort| / max|ort| with --verify (FP16 / TF32 kernels).
VERIFY_LIMIT = 5e-3


def _arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--onnx", type=Path, required=True, help="ONNX model from `vne-inline export --fp16`, named x.fp16.onnx next to x.onnx")
    p.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="engine cache (default: %(default)s)")
    p.add_argument("--workspace-mib", type=int, default=EngineOptions.workspace_mib, help="builder scratch memory")
    p.add_argument("--verify", action="store_true", help="compare with ONNX Runtime on one random batch")
    return p.parse_args()


def _verify(engine: TensorRTBackend, onnx: Path, size: int) -> float:
    from vne_inline.infer.onnxruntime_backend import OnnxRuntimeBackend

    c = engine.config
    rng = np.random.default_rng(0)
    batch = {n: rng.random((2, k, size, size), dtype=np.float32)
             for n, k in (("cine", c.n_cine_frames), ("ir", c.n_ir_images), ("t1", 1))}
    fp32 = onnx.with_name(onnx.name.removesuffix(FP16_SUFFIX) + ".onnx")
    reference = OnnxRuntimeBackend(fp32 if fp32.is_file() else onnx).run(batch)
    return float(np.abs(engine.run(batch) - reference).max() / np.abs(reference).max())


def main() -> int:
    args = _arguments()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = EngineOptions(cache_dir=args.cache_dir, build_if_missing=True, workspace_mib=args.workspace_mib)
    try:
        engine = TensorRTBackend(args.onnx, options)
    except BackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"engine ready: {engine.detail} in {options.cache_dir} ({options.profile.describe()})")
    if args.verify:
        error = _verify(engine, args.onnx, options.profile.opt_size)
        print(f"TensorRT vs ONNX Runtime (float32): max|difference| / max|ONNX Runtime| = {error:.2e} "
              f"(limit {VERIFY_LIMIT:.0e})")
        return 0 if error < VERIFY_LIMIT else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
