"""What the executors share: the command that executes one run, the cores this process may use, and the error
a grid ends with when some of its runs failed."""
import os
import sys

from dit.errors import UserError
from scaling.grid import RunSpec


class RunsFailed(UserError):
    """Runs of a grid failed (diverged, crashed or were cancelled); re-running the grid resumes them."""


def run_command(grid_dir, run: RunSpec, gpus: int, *, report: bool = True, final_report: bool = True) -> list[str]:
    """The command that executes one run: `scaling run-one`, under torchrun when it spans several GPUs. `report`:
    it refreshes the grid's report after its evaluation points; `final_report`: also the whole report once it is
    the grid's last run to finish (False when the caller renders that itself, as run-grid does for its workers)."""
    flags = ["--no-report"] if not report else [] if final_report else ["--no-final-report"]
    base = ["-m", "scaling.cli", "run-one", str(grid_dir), run.key, *flags]
    if gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", *base]
    return [sys.executable, *base]


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the system has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
