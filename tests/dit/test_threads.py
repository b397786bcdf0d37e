"""A CPU worker picks up the threads its parent hands it through $DIT_THREADS_FILE."""


def test_a_thread_hint_file_sets_torchs_threads_and_a_bad_one_changes_nothing(tmp_path, monkeypatch):
    import torch

    from dit.distributed import THREADS_FILE_ENV, follow_thread_hint

    before = torch.get_num_threads()
    hint = tmp_path / "run.threads"
    monkeypatch.setenv(THREADS_FILE_ENV, str(hint))
    try:
        follow_thread_hint()  # no file yet: nothing changes
        assert torch.get_num_threads() == before
        hint.write_text("not a number\n")
        follow_thread_hint()
        assert torch.get_num_threads() == before
        hint.write_text(f"{before + 1}\n")
        follow_thread_hint()
        assert torch.get_num_threads() == before + 1
    finally:
        torch.set_num_threads(before)


STEP_FAULTS = """
import ctypes, resource, sys
ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: 4 KiB pages, so faults count pages whatever THP does
import torch
from dit import distributed
from scaling.bench import training_setup

if sys.argv[1] == "plain":
    distributed.keep_freed_memory = lambda: False  # glibc's defaults
torch.set_num_threads(1)
step, _ = training_setup("DiT-T/4", path="fast", batch_size=64, input_size=16, in_channels=1, num_classes=10,
                         device="cpu")
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


def test_a_cpu_process_keeps_its_freed_memory_so_training_steps_stop_faulting_in_pages():
    import platform
    import subprocess
    import sys

    import pytest

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")

    def faults_per_step(mode: str) -> float:
        out = subprocess.run([sys.executable, "-c", STEP_FAULTS, mode], capture_output=True, text=True, check=True)
        return float(out.stdout.split()[-1])

    kept = faults_per_step("kept")  # scaling bench's step, which keeps freed memory as training on a CPU does
    assert kept < 200  # a DiT-T/4 step reuses its pages: none faulted in (tens for the Python objects)
    assert faults_per_step("plain") > 5 * kept  # glibc's defaults: about 1,800 a step here


def test_setup_on_a_cpu_keeps_freed_memory_and_on_no_other_device(monkeypatch):
    from dit import distributed

    calls = []
    monkeypatch.setattr(distributed, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.delenv("RANK", raising=False)
    assert distributed.setup("cpu").device.type == "cpu" and calls == [1]
    monkeypatch.setattr(distributed, "pick_device", lambda name: __import__("torch").device("meta"))
    distributed.setup("meta")
    assert calls == [1]
