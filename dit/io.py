"""Atomic file writes: a kill at any moment leaves either the previous file or the new one, whole."""
import contextlib
import errno
import os
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path

TEMP_SUFFIX = ".tmp"  # atomic_path's temporary files are `.<name>.<random>.tmp` beside their target


def remove_stale_temporaries(*folders) -> list[Path]:
    """Delete the temporary files that interrupted atomic writes left in `folders` (not recursive); returns them.

    Call it only while holding the folders' lock: a live writer's temporary file looks the same.
    """
    removed = []
    for folder in map(Path, folders):
        for tmp in folder.glob(f".*{TEMP_SUFFIX}") if folder.is_dir() else []:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`.

    On an exception the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp (and safetensors) make 0600; read like any new file
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(directory: Path):
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_file_path(path, option: str):
    """ValueError unless a writer can make a file at `path`: not a folder, and no file where a folder of it belongs.
    A writer checks this before its work, not after hours of it."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder; give the path of a file")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ValueError(f"{option} {path}: {parent} is a file where a folder belongs; give a path in a folder")


def replaces(path, *, ours: bool, force: bool, option: str = "--out") -> bool:
    """Whether a writer's output `path` exists (and will be replaced). What the writer did not write itself
    (`ours`) is refused in one ValueError line unless `force`: a writer never silently replaces a user's file."""
    path = Path(path)
    if not path.exists():
        return False
    if not (ours or force):
        kind = "folder" if path.is_dir() else "file"
        raise ValueError(f"{option} {path} is an existing {kind} that this command did not write; give a fresh path, "
                         f"or --force to replace it")
    return True


def atomic_write_text(path, text: str):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path, data: bytes):
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_torch_save(obj, path):
    """torch.save, atomically; a disk too full for it ends in OSError(ENOSPC) naming the folder, the space the
    file needs and the space left (torch may report it as "unexpected pos" from its zip writer)."""
    import torch

    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            torch.save(obj, f)
    except (OSError, RuntimeError) as exc:
        folder, need = Path(path).parent, tensor_bytes(obj)
        free = shutil.disk_usage(folder).free if folder.is_dir() else None
        if getattr(exc, "errno", None) != errno.ENOSPC and (free is None or free >= need):
            raise
        left = f", {free / 2**20:,.1f} MiB free" if free is not None else ""
        raise OSError(errno.ENOSPC, f"{Path(path).name} needs about {need / 2**20:,.1f} MiB{left}: No space left on "
                                    f"device", str(folder)) from None


def tensor_bytes(obj) -> int:
    """The bytes of the tensors in `obj` (nested dicts, lists and tuples): about what torch.save writes."""
    if isinstance(obj, dict):
        return sum(map(tensor_bytes, obj.values()))
    if isinstance(obj, (list, tuple)):
        return sum(map(tensor_bytes, obj))
    return obj.numel() * obj.element_size() if hasattr(obj, "element_size") else 0


def read_text(path, *, what: str, expected: str) -> str:
    """The UTF-8 text of `path`; a binary file ends in one ValueError line naming it and what was expected."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} {path} is not a text file (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                         f"give {expected}") from None


def read_json(path, *, what: str, fix: str):
    """The JSON in `path`; a damaged file ends in one ValueError line naming it and the fix."""
    import json

    try:
        return json.loads(read_text(path, what=what, expected="a JSON file"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {path} is damaged ({exc.msg} at line {exc.lineno}); {fix}") from None


ZIP_MAGIC, PICKLE_PROTO = b"PK\x03\x04", b"\x80"  # how torch.save's files begin (zip since torch 1.6, else pickle)


def load_tensors(path, *, what: str, expected: str):
    """torch.load with weights_only=True: tensors and plain containers, never pickled code.

    A file that is missing, a directory, not a torch file, truncated, or holds other pickled objects
    ends in one ValueError line: "cannot read {what} {path}: {reason}; give {expected}".
    """
    import pickle

    import torch

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a directory; give {expected}")
    if not path.is_file():
        raise ValueError(f"{what} {path} does not exist; give {expected}")
    with open(path, "rb") as f:
        head = f.read(4)
    if head and not head.startswith((ZIP_MAGIC, PICKLE_PROTO)):  # random bytes would read as unknown pickle opcodes
        raise ValueError(f"cannot read {what} {path}: not a torch file (it starts with {head.hex(' ')}, neither "
                         f"torch's zip archive nor a pickle); give {expected}")
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4": the refusal below says what matters
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        damaged = damaged_record(path)
        if damaged is None:
            return loaded
        reason = (f"its record {damaged} fails the checksum stored with it (the file was damaged after it was "
                  f"written)")
    except OSError:  # unreadable: the CLI names the path and the fix
        raise
    except pickle.UnpicklingError as exc:
        reason = _unpickling_reason(str(exc))
    except Exception as exc:  # truncated, a text file renamed .pt (KeyError, IndexError, ...), a zip of other files
        reason = f"not a whole torch file ({type(exc).__name__}: {str(exc)[:80]})"
    raise ValueError(f"cannot read {what} {path}: {reason}; give {expected}")


def damaged_record(path) -> str | None:
    """The first record of a torch (zip) file whose data does not match its CRC-32, which torch.load never checks;
    None when all match or the file is not a zip (torch's legacy format has no checksum)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip()
    except zipfile.BadZipFile:
        return None


def _unpickling_reason(message: str) -> str:
    """One line from torch's weights-only refusal (the rest of its text advises weights_only=False)."""
    if not message.startswith("Weights only load failed"):
        return f"not a torch file ({message.splitlines()[0][:80] if message else 'unpickling error'})"
    advice = ("Weights only load failed", "(1)", "(2)", "Please file an issue", "Check the documentation")
    after = message.split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in after.splitlines() if line.strip() and not line.strip().startswith(advice)]
    detail = lines[0].split(". ")[0] if lines else ""
    return (f"it holds pickled Python objects, not only tensors ({detail[:120]}), and is refused unread because "
            f"loading them could run code; if you trust it, re-save just its tensors with torch.save")
