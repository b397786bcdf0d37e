"""Progress bars show on a terminal only: a log file or a pipe gets no carriage-return frames."""
import io
import sys

from dit import progress


class Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def frames_written(monkeypatch, tty: bool, enabled: bool = True) -> str:
    stream = Stream(tty)
    monkeypatch.setattr(sys, "stderr", stream)
    for _ in progress.progress_bar(range(3), desc="work", enabled=enabled):
        pass
    return stream.getvalue()


def test_no_frames_when_stderr_is_a_file_or_a_pipe(monkeypatch):
    assert not progress.IN_NOTEBOOK  # pytest runs no notebook kernel
    assert frames_written(monkeypatch, tty=False) == ""


def test_frames_on_a_terminal_unless_switched_off(monkeypatch):
    assert "work" in frames_written(monkeypatch, tty=True)
    assert frames_written(monkeypatch, tty=True, enabled=False) == ""
