"""Probe the CUDA driver through ctypes, before any TensorRT or CUDA library object exists.

Creating a TensorRT runtime on a machine without a usable GPU can abort the whole process; asking
the driver library first (``cuInit``, ``cuDeviceGetCount``) fails cleanly instead.
"""

from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass

from vne_inline.infer.base import BackendError

__all__ = ["GpuInfo", "probe_cuda"]

_LIBRARY = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
_CC_MAJOR, _CC_MINOR = 75, 76  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR


@dataclass(frozen=True)
class GpuInfo:
    """The GPU an engine is built for: `name`, `compute_capability` (major, minor), driver version (e.g. 12080)."""

    name: str
    compute_capability: tuple[int, int]
    driver_version: int

    @property
    def capability(self) -> str:
        """Compute capability as "major.minor" (e.g. "9.0")."""
        return "{}.{}".format(*self.compute_capability)


def _check(lib: ctypes.CDLL, result: int, call: str) -> None:
    if result != 0:
        name = ctypes.c_char_p()
        lib.cuGetErrorName(result, ctypes.byref(name))
        reason = name.value.decode() if name.value else f"error {result}"
        raise BackendError(f"CUDA driver {call} failed: {reason}")


def probe_cuda(device: int = 0) -> GpuInfo:
    """Facts about CUDA device `device` from the driver; BackendError (one line) when there is no usable GPU."""
    try:
        lib = ctypes.CDLL(_LIBRARY)
    except OSError as exc:
        raise BackendError(f"no CUDA driver ({_LIBRARY} not loadable: {exc})") from exc
    _check(lib, lib.cuInit(0), "cuInit")
    count = ctypes.c_int()
    _check(lib, lib.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
    if count.value <= device:
        raise BackendError(f"no CUDA device {device} ({count.value} visible)")
    handle = ctypes.c_int()
    _check(lib, lib.cuDeviceGet(ctypes.byref(handle), device), "cuDeviceGet")
    name = ctypes.create_string_buffer(256)
    _check(lib, lib.cuDeviceGetName(name, len(name), handle), "cuDeviceGetName")
    major, minor, version = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    _check(lib, lib.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, handle), "cuDeviceGetAttribute")
    _check(lib, lib.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, handle), "cuDeviceGetAttribute")
    _check(lib, lib.cuDriverGetVersion(ctypes.byref(version)), "cuDriverGetVersion")
    return GpuInfo(name.value.decode(errors="replace"), (major.value, minor.value), version.value)
