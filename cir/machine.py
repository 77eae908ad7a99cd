"""What machine a number was measured on (every report names it), and how many threads the work may use."""

from __future__ import annotations

import os
import platform
import sys


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's or `taskset`'s limit), not the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity API (macOS, Windows)
        return os.cpu_count() or 1


def configure_threads() -> None:
    """Thread settings for the CLI, made before torch is imported: OpenMP reads its environment once, when it loads.

    OMP_WAIT_POLICY=PASSIVE: an idle OpenMP worker sleeps instead of spinning for a while after each parallel region.
    Spinning wins a little on an idle machine, but under CPU contention the spinning workers take the time slices
    the working ones need; stage two runs many small parallel regions (short sequences, small matrices), so it
    suffered most (36x slower against 13x for encoding).

    OMP_NUM_THREADS: torch's intra-op default is the machine's physical core count, blind to a CPU affinity limit
    (a container's cpuset, `taskset`); more threads than usable cores only time-slice against each other. When the
    process may use fewer cores than the machine has, the default becomes that number, which torch
    (`torch.get_num_threads()`) and faiss both read at import. Setting the variable rather than calling
    `torch.set_num_threads` spares the commands that never use torch its import (seconds). Values the user set are
    kept, and `--threads` still overrides.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cores = available_cores()
    if cores < (os.cpu_count() or cores) and "MKL_NUM_THREADS" not in os.environ:
        os.environ.setdefault("OMP_NUM_THREADS", str(cores))


def machine_description() -> str:
    """CPU model and cores, threads used and GPU (when torch is in use), for the caption under every report."""
    cores = available_cores()
    usable = "" if cores == os.cpu_count() else f" ({cores} available to this process)"
    parts = [f"CPU: {_cpu_model()}, {os.cpu_count()} cores{usable}"]
    torch = sys.modules.get("torch")  # only describe torch if the work used it: importing it costs seconds
    if torch is None:
        parts.append("torch not loaded")
    else:
        parts.append(f"torch {torch.__version__}, {torch.get_num_threads()} threads used")
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


def _proc_status(key: str) -> int | None:
    """A memory line of /proc/self/status in bytes (Linux), or None."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def resident_bytes() -> int | None:
    """The process's resident memory now (VmRSS; None where /proc is missing)."""
    return _proc_status("VmRSS")


def peak_rss_bytes() -> int:
    """The process's peak resident memory since it started, or since the last `reset_peak_rss()` where Linux allows
    one (VmHWM of /proc/self/status; elsewhere getrusage's maxrss, which cannot be reset)."""
    peak = _proc_status("VmHWM")
    if peak is not None:
        return peak
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def reset_peak_rss() -> bool:
    """Start a new peak-memory window at the current resident size (Linux: writing 5 to /proc/self/clear_refs
    resets VmHWM), so that a phase's own peak is read, not the process's; False where it cannot be reset."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False
