"""A short description of the machine a measurement ran on, recorded with every study, trial and profile:
tokens/s means nothing without it."""

from __future__ import annotations

import os
import platform

import torch


def describe(device: torch.device | str | None = None) -> dict[str, str]:
    """The device (`device`, else CUDA when available, else the CPU), torch and Python versions, the CPU and its thread
    counts, and for a GPU its name, memory and CUDA version; every value a string."""
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info = {
        "device": str(dev),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_count": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
    }
    if dev.type == "cuda" and torch.cuda.is_available():
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        info.update(gpu=props.name, gpu_memory_gb=f"{props.total_memory / 2**30:.1f}", cuda=str(torch.version.cuda))
    return info


def summary(info: dict[str, str]) -> str:
    """One line for tables: the GPU name, or the CPU with its thread count."""
    if "gpu" in info:
        return f"{info['gpu']} ({info['device']})"
    return f"CPU {info['cpu']} x{info['torch_threads']} threads"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
