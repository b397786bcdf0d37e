"""The `--preset NAME` option of every command that reads a grid, its choices listed from scaling/presets/."""


def add_preset_argument(p):
    """Add `--preset NAME` to parser `p`; its help names every preset shipped in scaling/presets/."""
    from scaling.gridfile import preset_names

    p.add_argument("--preset", metavar="NAME", help=f"a shipped preset: {', '.join(preset_names())}")
