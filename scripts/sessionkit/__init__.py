"""Shared code for the codex-session-migration scripts (standard library only, Python 3.9+)."""

EXIT_CLEAN = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2


class UserError(Exception):
    """Bad input or an unsafe situation: reported as one line on stderr with exit code 2."""
