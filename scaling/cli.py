"""The `scaling` command line: parses arguments and calls one function per command.

Each command lives in `scaling/commands/<name>.py` with `add_parser(subparsers)`, which registers
the command and sets `func(args) -> int | None`; modules import their heavy dependencies inside
`func`, so `scaling --help` stays fast. Errors a user can cause (ValueError, FileNotFoundError)
end as one line on stderr and exit status 2.
"""
import argparse
import importlib
import sys

# Commands in the order `scaling --help` lists them.
COMMANDS = (
    "run-grid",
    "status",
    "results",
    "report",
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
    "lr-find",
    "bench",
    "run-one",
)

DESCRIPTION = """\
Run, check and extend the scaling study of Diffusion Transformers (DiT, Peebles & Xie):
train DiT models, sample them, evaluate them, and sweep grids of models into a scaling report.
Run `scaling COMMAND --help` for the options of each command."""


def package_version() -> str:
    """The installed distribution's version (pyproject's), or 'unknown' when running from an uninstalled tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dit-scaling")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scaling", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in COMMANDS:
        importlib.import_module(f"scaling.commands.{name.replace('-', '_')}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError) as exc:
        print(f"scaling {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"scaling {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
