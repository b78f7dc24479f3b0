"""GPUs as NVML reports them, when there are any: NVIDIA's management library through
``nvidia-ml-py`` (the ``[gpu]`` extra). Without the library, the driver or a device, the
answer is an empty list, found once and remembered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Device:
    index: int
    name: str
    utilization: float
    """Share of the last sample period the GPU was busy, 0..1."""
    memory_used: int
    memory_total: int
    power_watts: float | None


_nvml: Any = None
_absent = False


def _library() -> Any:
    """NVML, initialised once; None without it."""
    global _nvml, _absent
    if _nvml is None and not _absent:
        try:
            import pynvml

            pynvml.nvmlInit()
            _nvml = pynvml
        except Exception:  # no library, no driver, no device: no GPU series
            _absent = True
    return _nvml


def count() -> int:
    """How many GPUs NVML sees (0 without it): the GPUs a price per GPU-hour is paid for."""
    nvml = _library()
    if nvml is None:
        return 0
    try:
        return int(nvml.nvmlDeviceGetCount())
    except Exception:
        return 0


def read() -> list[Device]:
    nvml = _library()
    if nvml is None:
        return []
    devices = []
    try:
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            rates = nvml.nvmlDeviceGetUtilizationRates(handle)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                power: float | None = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
            except Exception:  # some boards do not report power
                power = None
            devices.append(
                Device(
                    index,
                    name.decode() if isinstance(name, bytes) else str(name),
                    rates.gpu / 100.0,
                    int(memory.used),
                    int(memory.total),
                    power,
                )
            )
    except Exception:
        return []
    return devices
