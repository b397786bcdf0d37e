"""An advisory lock on a directory: one process at a time trains a run or works on a grid.

The lock is `fcntl.flock` on a file inside the directory, which records the holder's pid and host.
The kernel releases a flock when its process dies, however it dies, so a lock file that still
names a process but can be taken is stale: it is taken over with one line on stderr saying so.
A clean exit clears the file (it is never deleted: deleting a locked file races with its next taker).
"""
import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path


class DirectoryBusy(ValueError):
    """Another live process holds the directory's lock (the CLI prints it as one line, exit 2)."""


def holder_text(info: dict) -> str:
    return f"process {info.get('pid', '?')} on {info.get('host', '?')} ({info.get('command', '?')})"


def read_holder(handle) -> dict:
    handle.seek(0)
    try:
        return json.loads(handle.read() or "{}")
    except json.JSONDecodeError:
        return {}


@contextlib.contextmanager
def directory_lock(lock_path, what: str, doing: str):
    """Hold the lock at `lock_path` for the `with` body; DirectoryBusy when a live process holds it.

    `what` names the directory in messages ("grid directory runs/demo"), `doing` the holder's work ("scaling run-grid").
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DirectoryBusy(
                f"{what} is in use by {holder_text(read_holder(handle))}; wait for it to end or stop it "
                f"(this lock: {lock_path})"
            ) from None
        previous = read_holder(handle)
        if previous.get("pid"):
            print(f"warning: took over the lock of {what} from {holder_text(previous)}, which no longer runs",
                  file=sys.stderr, flush=True)
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": doing, "since": time.time()})
        )
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)
