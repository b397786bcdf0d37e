import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "gpu_suite.sh"


def test_the_gpu_suite_parses_as_bash():
    subprocess.run(["bash", "-n", str(SUITE)], check=True)


@pytest.mark.slow
def test_a_dry_run_writes_every_row_into_one_json(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, PYTHONPATH=str(ROOT))
    subprocess.run(["bash", str(SUITE), "--dry-run"], cwd=ROOT, env=env, check=True, timeout=900)
    suite = json.loads((tmp_path / "gpu-suite.json").read_text())
    assert suite["dry_run"] and len(suite["rows"]) == 12
    failed = {name: row["rc"] for name, row in suite["rows"].items() if row["rc"] != 0}
    assert not failed
    assert all(row["result"] is not None for row in suite["rows"].values())
    assert (tmp_path / "profile-xl2-b128.json.gz").is_file()
