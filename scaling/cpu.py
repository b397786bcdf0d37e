"""CPU threads that share a loaded machine gracefully (measured in benchmarks/cpu_load.py; README, notes).

PyTorch's OpenMP threads spin while they wait for each other. Beside another busy process one of them
is often descheduled, and the others burn their time slices spinning at the next barrier: one DiT-T/2
step took 17x its quiet time on 2 cores. A passive wait policy makes waiting threads sleep at once,
and one thread per core left idle (by the load average when the command starts) keeps them from
waiting for a descheduled one. OpenMP reads these variables when torch first loads it, so
`configure_cpu` runs before torch is imported.
"""
import os

# OpenMP settings, each kept when the user has set it: GNU OpenMP (PyTorch's Linux wheels) and Intel OpenMP.
WAIT_POLICY = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}


def configure_cpu(environ=os.environ, load: float | None = None) -> dict:
    """Set the passive OpenMP wait policy and the thread count, each unless the user chose it; returns what was set."""
    chosen = {name: value for name, value in WAIT_POLICY.items() if name not in environ}
    if "OMP_NUM_THREADS" not in environ:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        busy = round(os.getloadavg()[0] if load is None else load)  # processes already running here
        chosen["OMP_NUM_THREADS"] = str(max(1, min(cores, cores - busy))) if busy >= 1 else None
    chosen = {name: value for name, value in chosen.items() if value is not None}
    environ.update(chosen)
    return chosen
