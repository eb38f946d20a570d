"""What this CPU can do, read from the machine, never assumed.

The machines this project runs on vary (an AMD EPYC with AVX2 only; Xeons that advertise
AMX and whose bf16 kernels died with "Illegal instruction"). Int8 kernels without VNNI
(``vpmaddubsw`` on AVX2/AVX-512) add pairs of u8*s8 products into int16 and saturate: ONNX
Runtime's static int8 outputs were wrong there (relative error 0.15-0.18) until the weights
used 7 bits (``reduce_range``). :func:`reduce_range` decides that from the flags.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CPU:
    model: str
    arch: str
    cores: int
    flags: frozenset = field(default_factory=frozenset)
    torch_capability: str = ""

    @property
    def vnni(self) -> bool:
        """Whether u8*s8 dot products accumulate straight into int32 (no int16 saturation)."""
        return bool(self.flags & {"avx512_vnni", "avx_vnni", "amx_int8"}) \
            or self.arch in ("aarch64", "arm64") and "asimddp" in self.flags

    def to_dict(self) -> dict:
        wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
                  "amx_int8", "amx_bf16", "asimddp")
        return {"model": self.model, "arch": self.arch, "cores": self.cores,
                "features": [f for f in wanted if f in self.flags], "vnni": self.vnni,
                "torch_capability": self.torch_capability}


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and not model:
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def cpu_info() -> CPU:
    """The CPU's model name, core count, feature flags and torch's chosen kernel level."""
    import os
    model, flags = _cpuinfo()
    try:
        import torch
        cap = str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - an informative field only
        cap = ""
    return CPU(model or platform.processor() or "unknown", platform.machine(),
               os.cpu_count() or 1, frozenset(flags), cap)


def reduce_range(cpu: CPU | None = None) -> bool:
    """7-bit weights for int8 kernels where the CPU lacks VNNI (see the module's note)."""
    cpu = cpu or cpu_info()
    return not cpu.vnni
