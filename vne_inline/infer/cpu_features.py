"""The CPU's matrix features, from ``/proc/cpuinfo``, and the precisions they run fast.

Reduced precision pays only where the CPU has a unit for it: bfloat16 needs AMX-BF16 (Intel Xeon,
Sapphire Rapids and later) or AVX512-BF16 (Intel Cooper Lake and later, AMD Zen 4 and later);
without them oneDNN and OpenVINO run bfloat16 models in float32 (OpenVINO ignores its bf16 hint)
or emulate it slowly. int8 needs AMX-INT8, AVX512-VNNI or AVX-VNNI for its 4-byte dot products;
with plain AVX2 the u8 x s8 multiply-add (``vpmaddubsw``) still runs, at most about 2x the float32
rate, and its 16-bit intermediate sums can saturate (weights are then quantized with 7 bits,
``reduce_range``).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MatrixFeatures", "cpu_field", "cpu_flags", "matrix_features"]

#: /proc/cpuinfo flag -> the name used in reports, most capable first.
FEATURE_FLAGS: dict[str, str] = {
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
    "avx512_bf16": "AVX512-BF16",
    "avx512_vnni": "AVX512-VNNI",
    "avx_vnni": "AVX-VNNI",
}
_CPUINFO = Path("/proc/cpuinfo")


def cpu_field(key: str, cpuinfo: str | None = None) -> str:
    """The first value of `key` (e.g. "model name", "flags") in /proc/cpuinfo text ("" when absent)."""
    if cpuinfo is None:
        try:
            cpuinfo = _CPUINFO.read_text()
        except OSError:
            return ""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return ""


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags (lower case) from /proc/cpuinfo text."""
    return frozenset(cpu_field("flags", cpuinfo).split())


@dataclass(frozen=True)
class MatrixFeatures:
    """Which matrix units the CPU has (from its flags) and what that means for each precision."""

    model: str
    flags: frozenset[str]

    @property
    def names(self) -> list[str]:
        """The matrix features present, by their report names (AMX-BF16, ..., AVX-VNNI)."""
        return [name for flag, name in FEATURE_FLAGS.items() if flag in self.flags]

    @property
    def vector_isa(self) -> str:
        """The widest vector instruction set: AVX-512, AVX2, or SSE/other."""
        if "avx512f" in self.flags:
            return "AVX-512"
        return "AVX2" if "avx2" in self.flags else "no AVX2"

    @property
    def bf16_native(self) -> bool:
        """True when bfloat16 matrix products run on a bf16 unit (AMX-BF16 or AVX512-BF16)."""
        return bool({"amx_bf16", "avx512_bf16"} & self.flags)

    @property
    def int8_dot(self) -> bool:
        """True when int8 products have 4-byte dot-product instructions (AMX-INT8 or a VNNI)."""
        return bool({"amx_int8", "avx512_vnni", "avx_vnni"} & self.flags)

    def precision_note(self, precision: str) -> str:
        """One line: how this CPU runs `precision` ("fp32", "bf16", "int8")."""
        if precision == "bf16":
            if self.bf16_native:
                return f"bf16 on {'AMX-BF16' if 'amx_bf16' in self.flags else 'AVX512-BF16'}"
            return "bf16: no AMX-BF16 or AVX512-BF16 on this CPU (OpenVINO would run float32)"
        if precision == "int8":
            if self.int8_dot:
                unit = next(FEATURE_FLAGS[f] for f in ("amx_int8", "avx512_vnni", "avx_vnni") if f in self.flags)
                return f"int8 on {unit}"
            return f"int8 without VNNI or AMX ({self.vector_isa} multiply-add, 7-bit weights)"
        return f"fp32 on {self.vector_isa}" + (" FMA" if "fma" in self.flags else "")

    def describe(self) -> str:
        """E.g. "AMD EPYC: AVX2, no AMX-BF16/AMX-INT8/AVX512-BF16/AVX512-VNNI/AVX-VNNI"."""
        present = ", ".join(self.names)
        absent = "/".join(name for flag, name in FEATURE_FLAGS.items() if flag not in self.flags)
        parts = [self.vector_isa, *([present] if present else []), *([f"no {absent}"] if absent else [])]
        return f"{self.model}: {', '.join(parts)}"


def matrix_features(cpuinfo: str | None = None) -> MatrixFeatures:
    """This CPU's :class:`MatrixFeatures` (or those described by `cpuinfo` text)."""
    model = cpu_field("model name", cpuinfo) or platform.processor() or platform.machine()
    return MatrixFeatures(model, cpu_flags(cpuinfo))
