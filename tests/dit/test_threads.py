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
