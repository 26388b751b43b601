"""The machine a run uses: device choice, threads, CPU model, peak memory."""

from __future__ import annotations

import os
import platform

import torch

try:
    import resource
except ImportError:  # Windows: no getrusage; peak memory is then reported as unknown
    resource = None

from rec.errors import ConfigError


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` is ``cuda`` when a GPU is visible, else ``cpu``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device={name}: rec runs on cpu or cuda (cuda:N for a GPU of "
                          "several); use device=auto to pick a GPU when one is visible.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: no CUDA GPU is visible here; use device=cpu or device=auto.")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device={name}: this machine has {torch.cuda.device_count()} GPU(s), "
                          "numbered from 0.")
    return device


def total_memory() -> int:
    """Bytes of physical memory (0 where the OS cannot say): sizes that could never fit are
    refused before the work starts."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(int(threads))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB); NaN where the OS cannot say."""
    if resource is None:
        return float("nan")
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if platform.system() == "Linux" else kb / 2**20


def peak_gpu_mb(device: torch.device) -> dict:
    """``{"peak_gpu_mb": ...}``: the most GPU memory torch held on ``device`` (empty on a CPU)."""
    if device.type != "cuda":
        return {}
    return {"peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20}


def describe(device: torch.device) -> dict:
    info = {"device": str(device), "cpu": cpu_model(), "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
