"""The one exception class, besides ValueError and OSError, that the `scaling` CLI shows as a user's error."""


class UserError(Exception):
    """An outcome the user fixes, not a bug (a diverged run, failed runs of a grid): one line on stderr, exit 2."""
