"""Training speed on a loaded CPU: DiT-T/2 steps at batch 64 (MNIST-32 geometry), quiet and beside busy processes.

Each measurement is a fresh child process (OpenMP reads its settings when torch loads it) that times
--steps full training steps (forward, backward, AdamW, EMA) after two warm-up steps, while 0, 1 or 2
other processes spin a Python loop (started here, killed after, and bounded by --busy-seconds anyway).
Policies:
  old:      torch's defaults (one thread per core, OpenMP's spin-then-sleep wait)
  passive:  OMP_WAIT_POLICY=PASSIVE, KMP_BLOCKTIME=0, one thread per core
  1-thread: OMP_NUM_THREADS=1 with the passive policy
`scaling` leaves all of them to the user (README, "Errors, trust and a loaded CPU"): the passive
policy helps beside busy processes and costs a third of the speed on a quiet machine.

    python benchmarks/cpu_load.py --steps 5
"""
import argparse
import os
import subprocess
import sys

POLICIES = {
    "old": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"},
    "1-thread": {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0", "OMP_NUM_THREADS": "1"},
}
SETTINGS = ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "OMP_NUM_THREADS", "GOMP_SPINCOUNT", "MKL_NUM_THREADS")
SPIN = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"


def time_steps(steps: int) -> float:
    """Seconds per training step of DiT-T/2 at batch 64 on 32 x 32 x 1 inputs (run in the child)."""
    from scaling.bench import bench_training

    row = bench_training("DiT-T/2", path="reference", batch_size=64, input_size=32, in_channels=1, num_classes=10,
                         steps=steps, warmup=2, device="cpu")
    return 64 / row["train_images_per_sec"]


def measure(policy: dict, busy: int, steps: int, busy_seconds: float) -> float:
    """Seconds per step in a child process with `policy`'s environment beside `busy` spinning processes."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS} | policy
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=busy_seconds)]) for _ in range(busy)]
    try:
        out = subprocess.run([sys.executable, __file__, "--child", "--steps", str(steps)], env=env, check=True,
                             capture_output=True, text=True, timeout=busy_seconds)
    except subprocess.TimeoutExpired:  # printed as inf: slower than --busy-seconds for the whole measurement
        return float("inf")
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()
    return float(out.stdout.split()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2], help="numbers of busy processes to try")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--busy-seconds", type=float, default=300, help="bound of one measurement (inf past it)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(f"{time_steps(args.steps):.4f}")
        return
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} before the first measurement")
    print(f"{'policy':<10} " + " ".join(f"{f'{n} busy':>10}" for n in args.busy) + "   (s per step)")
    for name in args.policies:
        row = [measure(POLICIES[name], busy, args.steps, args.busy_seconds) for busy in args.busy]
        print(f"{name:<10} " + " ".join(f"{s:>10.2f}" for s in row), flush=True)


if __name__ == "__main__":
    main()
