"""Shared code for the codex-session-migration scripts (standard library only, Python 3.9+).

Subpackages, lowest layer first; a layer imports only lower ones (tests/test_bundle.py checks):
codexfiles (Codex's own files) < ui (what the user reads) < diagnose (snapshot, audit) <
runlog (operations, executor, journal, undo, runs) < fixes (the planners)."""

EXIT_CLEAN = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2


class UserError(Exception):
    """Bad input or an unsafe situation: reported as one line on stderr with exit code 2."""


class Lines(str):
    """Text of several lines kept as its lines: an edge escapes each line before joining them, so a
    newline inside a string from a home is printed as `\\n`, never as a line break of its own."""

    parts: list

    def __new__(cls, parts: "list") -> "Lines":
        items: list = []
        for p in parts:
            items += p.parts if isinstance(p, Lines) else [str(p)]
        obj = super().__new__(cls, "\n".join(items))
        obj.parts = items
        return obj
