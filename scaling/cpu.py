"""CPU threads that share a loaded machine gracefully (measured in benchmarks/cpu_load.py; README, notes).

PyTorch's OpenMP threads spin while they wait for each other. Beside another busy process one of them
is often descheduled, and the others burn their time slices spinning at the next barrier: one DiT-T/2
step took 17x its quiet time on 2 cores. A passive wait policy makes waiting threads sleep at once.
OpenMP reads these variables when torch first loads it, so `configure_cpu` runs before torch is imported.

The thread count stays torch's (one per core) unless OMP_NUM_THREADS says otherwise: a count guessed
from the load average at start-up would be wrong for the whole run whenever the load was a job that
had just ended (the 1-minute average lags), and a quiet machine would train on one thread.
"""
import os

# OpenMP settings, each kept when the user has set it: GNU OpenMP (PyTorch's Linux wheels) and Intel OpenMP.
WAIT_POLICY = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}


def configure_cpu(environ=os.environ) -> dict:
    """Set the passive OpenMP wait policy, each variable unless the user chose it; returns what was set."""
    chosen = {name: value for name, value in WAIT_POLICY.items() if name not in environ}
    environ.update(chosen)
    return chosen
