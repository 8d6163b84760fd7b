"""The one error type the user sees: its message is the whole story, one line."""


class DarwinError(Exception):
    """A problem the user can fix; the CLI prints it as `error: <message>` and exits 1."""
