"""What machine a number was measured on: every report names it."""

from __future__ import annotations

import os
import platform
import sys


def machine_description() -> str:
    """CPU model and cores, torch threads and GPU (when torch is in use), for the caption under every report."""
    parts = [f"CPU: {_cpu_model()}, {os.cpu_count()} cores"]
    torch = sys.modules.get("torch")  # only describe torch if the work used it: importing it costs seconds
    if torch is None:
        parts.append("torch not loaded")
    else:
        parts.append(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        if torch.cuda.is_available():
            parts.append(f"GPU: {torch.cuda.get_device_name(0)}")
        else:
            parts.append("no GPU")
    return "; ".join(parts)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
