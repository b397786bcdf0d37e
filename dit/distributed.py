"""torch.distributed set-up for torchrun (DDP): NCCL on GPUs, gloo on CPU, a no-op for one process.

The ranks come from torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE), or, for tasks that `srun`
starts without torchrun, from SLURM's (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS, the job's first node
as the rendezvous host). Each process's GPU is its *local* rank on its node, never its global rank.
"""
import dataclasses
import datetime
import os
from pathlib import Path

import torch
import torch.distributed as dist

THREADS_FILE_ENV = "DIT_THREADS_FILE"  # names a file whose number is the intra-op threads this process may use now
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt(3) parameters
HEAP_BLOCKS_UP_TO = 32 << 20  # glibc's largest mmap threshold: blocks up to 32 MiB come from the heap
KEEP_FREE_BYTES = 1 << 30  # freed heap memory kept by the process before any goes back to the system


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available, else cpu; otherwise the named device, which must exist here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; choose auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but PyTorch sees no CUDA GPU here; use --device cpu (or auto)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} asked for, but only {torch.cuda.device_count()} GPU(s) are visible; "
                         f"choose cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


SLURM_PORT_BASE, SLURM_PORT_SPAN = 20000, 20000  # a rendezvous port per job id, as submitit picks one


def slurm_rank_env(environ) -> dict:
    """torchrun's variables for a task of an `srun` step of several tasks without torchrun; {} elsewhere (under
    torchrun, or the batch script itself, whose SLURM_NTASKS counts the tasks its steps may start)."""
    in_step = environ.get("SLURM_STEP_ID", "").isdigit() and int(environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1
    if "RANK" in environ or not in_step:
        return {}
    from submitit.slurm.slurm import _parse_node_list

    return {
        "RANK": environ["SLURM_PROCID"],
        "LOCAL_RANK": environ.get("SLURM_LOCALID", "0"),
        "WORLD_SIZE": environ["SLURM_STEP_NUM_TASKS"],
        "MASTER_ADDR": environ.get("MASTER_ADDR") or _parse_node_list(environ["SLURM_JOB_NODELIST"])[0],
        "MASTER_PORT": environ.get("MASTER_PORT")
        or str(SLURM_PORT_BASE + int(environ["SLURM_JOB_ID"]) % SLURM_PORT_SPAN),
    }


def keep_freed_memory() -> bool:
    """Let freed CPU tensors' memory stay with this process (glibc: blocks up to 32 MiB from the heap, up to 1 GiB of
    free heap kept), so each training step reuses the pages of the last one instead of faulting in and zeroing new
    ones: a DiT-M/2 CPU step at 16 px took 5,000-50,000 page faults and 5% more time (8% for DiT-T/2) beside another
    run. Allocation only: the numbers do not change. False where the C library has no mallopt (not glibc)."""
    import ctypes
    import ctypes.util

    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, HEAP_BLOCKS_UP_TO)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREE_BYTES))


def compute_device(name: str = "auto") -> torch.device:
    """The device this process computes on (pick_device); on a CPU the process keeps its freed memory from now on
    (keep_freed_memory), as training, sampling and their benchmarks all want."""
    device = pick_device(name)
    if device.type == "cpu":
        keep_freed_memory()
    return device


def setup(device: str = "auto") -> DistInfo:
    """Join the process group torchrun (or srun) describes in the environment, or run as a single process, on
    compute_device(device)."""
    os.environ.update(slurm_rank_env(os.environ))
    dev = compute_device(device)
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return DistInfo(device=dev)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=dev)


def teardown():
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        x = x.clone()
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x


def all_reduce_max(x: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x


def all_gather_objects(obj) -> list:
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier():
    if dist.is_initialized():
        dist.barrier()


def follow_thread_hint():
    """Take the number of threads in the file $DIT_THREADS_FILE names, when it exists and differs from torch's:
    a parent that started this process with a share of the cores hands it more once its other workers are done
    (OpenMP's pool resizes between steps; the numbers do not depend on the thread count)."""
    path = os.environ.get(THREADS_FILE_ENV)
    try:
        threads = int(Path(path).read_text()) if path else 0
    except (OSError, ValueError):
        return
    if threads >= 1 and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
