"""The one exception hierarchy of genforge.

Anything a user can fix (a missing file, a bad value, the wrong kind of artifact) is raised as a
`GenforgeError`; the CLI prints it as a single line and exits non-zero instead of a traceback.
"""


class GenforgeError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ConfigError(GenforgeError):
    """A configuration key or value is unknown, missing or out of range."""


class DataError(GenforgeError):
    """Input data is missing, unreadable, malformed or empty after filtering."""


class ArtifactError(GenforgeError):
    """An artifact folder is missing, incomplete or of the wrong kind for this stage."""


class Stopped(GenforgeError):
    """A run stopped on request (Ctrl-C, SIGTERM) after saving what it needs to resume: not a failure, so the
    CLI says so without "error:" and exits as a shell expects of a signal (128 + its number)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum
