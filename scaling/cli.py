"""The `scaling` command line: parses arguments and calls one function per command.

Each command lives in `scaling/commands/<name>.py` with `add_parser(subparsers)`, which registers
the command and sets `func(args) -> int | None`; modules import their heavy dependencies inside
`func`, so `scaling --help` stays fast.

Errors a user can cause end as one line on stderr naming the problem and the fix, exit status 2:
ValueError (options, files, data), OSError (permissions, a full or read-only disk, a file where a
folder belongs) and dit.errors.UserError (a diverged run, failed runs of a grid). Anything else is
a bug and raises. An error may carry its own `exit_status` (a training run stopped by a signal exits
with 128 + the signal's number after its checkpoint). `--traceback` (before or after COMMAND) or
SCALING_TRACEBACK=1 prints the full traceback of any error first.
"""

import argparse
import errno
import importlib
import os
import sys
import traceback

# Commands in the order `scaling --help` lists them.
COMMANDS = (
    "run-grid",
    "status",
    "results",
    "report",
    "fit",
    "plan",
    "models",
    "gflops",
    "encode",
    "train",
    "sample",
    "ref-stats",
    "eval",
    "fid",
    "export",
    "ema",
    "lr-find",
    "coord-check",
    "bench",
    "run-one",
)

DESCRIPTION = """\
Run, check and extend the scaling study of Diffusion Transformers (DiT, Peebles & Xie):
train DiT models, sample them, evaluate them, and sweep grids of models into a scaling report.
Run `scaling COMMAND --help` for the options of each command."""

TRACEBACK_ENV = "SCALING_TRACEBACK"
TRACEBACK_HELP = f"show the full traceback of an error (also: {TRACEBACK_ENV}=1)"

# The fix for an OSError, by errno; the error's own text says what happened.
OS_ERROR_FIXES = {
    errno.EACCES: "check its permissions or choose another path",
    errno.EPERM: "check its permissions or choose another path",
    errno.EROFS: "the file system is read-only; choose a path on a writable disk",
    errno.ENOSPC: "free space on that disk or choose a path on another one",
    errno.EDQUOT: "free space within your quota or choose a path on another disk",
    errno.EISDIR: "a folder is where a file belongs; give a file path",
    errno.ENOTDIR: "a file is where a folder belongs; give a folder path or move the file away",
    errno.EEXIST: "something is already there; choose another path or remove it",
    errno.ENOENT: "check the path",
}


def package_version() -> str:
    """The installed distribution's version (pyproject's), or 'unknown' when running from an uninstalled tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dit-scaling")
    except PackageNotFoundError:
        return "unknown (not installed)"


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line naming the command and where its options are listed."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="scaling", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    parser.add_argument("--traceback", action="store_true", dest="traceback_first", help=TRACEBACK_HELP)
    for name in COMMANDS:
        importlib.import_module(f"scaling.commands.{name.replace('-', '_')}").add_parser(subparsers)
    for command in subparsers.choices.values():
        command.add_argument("--traceback", action="store_true", default=False, help=TRACEBACK_HELP)
        command.formatter_class = type("ShowsDefaults", (ShowsDefaults, command.formatter_class), {})
    return parser


class ShowsDefaults(argparse.HelpFormatter):
    """Every option's help ends in its default, unless it says one already or has none worth saying."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        unsaid = default is None or isinstance(default, bool) or default in ((), [], argparse.SUPPRESS)
        if "default" in text or unsaid or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv == ["--version"]:  # answered before the commands' parsers import torch and the model registries
        print(f"scaling {package_version()}")
        return 0
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help and --version exit 0 as argparse does; a usage error is returned as a status
        if exc.code != 2:
            raise
        return 2
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print(f"scaling {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `scaling ... | head` closed the pipe: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 0
    except Exception as exc:
        if not is_user_error(exc):
            raise
        if args.traceback or args.traceback_first or os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            traceback.print_exc()
        print(f"scaling {args.command}: error: {error_line(exc)}", file=sys.stderr)
        return getattr(exc, "exit_status", 2)


def is_user_error(exc: Exception) -> bool:
    from dit.errors import UserError

    return isinstance(exc, (ValueError, OSError, UserError))


def error_line(exc: Exception) -> str:
    """The error as one line; an OSError names its path, what happened and the fix."""
    if isinstance(exc, OSError) and exc.strerror:
        path = exc.filename2 if exc.filename2 is not None else exc.filename  # a rename's target is the user's path
        fix = OS_ERROR_FIXES.get(exc.errno, "check the path and the disk")
        return f"{path}: {exc.strerror}; {fix}" if path is not None else f"{exc.strerror}; {fix}"
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
