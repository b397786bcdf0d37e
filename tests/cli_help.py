"""What `scaling COMMAND --help` says about one option, for tests of the CLI's lists of choices."""
import pytest

from scaling.cli import main


def option_help(capsys, monkeypatch, command: str, option: str) -> str:
    """The line of `scaling COMMAND --help` that explains OPTION (a wide terminal, so nothing is wrapped)."""
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith(option))
