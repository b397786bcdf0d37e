"""The `slurm` tests run grids against a real single-node SLURM started by tests/slurm/cluster.sh (SLURM_CONF
from the environment, else the script's folder). Without `sbatch`, or with no cluster answering, they are skipped
with the reason."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

CLUSTER_SCRIPT = Path(__file__).parent / "cluster.sh"


@pytest.fixture(scope="session")
def cluster() -> str:
    """SLURM_CONF of a running cluster (set in this process, so child processes see it), or skip."""
    if not shutil.which("sbatch"):
        pytest.skip(f"no sbatch here: install slurm-wlm and munge and run `{CLUSTER_SCRIPT} start` (as root)")
    conf = os.environ.setdefault("SLURM_CONF", subprocess.run([CLUSTER_SCRIPT, "conf"], capture_output=True,
                                                                text=True, check=True).stdout.strip())
    try:
        answer = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        answer = None
    if answer is None or answer.returncode or not answer.stdout.strip():
        pytest.skip(f"no SLURM cluster answers at {conf}: start one with `{CLUSTER_SCRIPT} start` (as root)")
    return conf
