"""Every command the scripts print for a user to paste: absolute, shell-quoted, the same home and DB.

One builder, so a command printed anywhere (next steps, undo, escalation, findings) runs from any
folder, in a fresh shell, on a home whose path holds spaces, quotes or non-UTF-8 bytes.
"""
from __future__ import annotations

import os
import shlex
import sys
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Union

from sessionkit.ui.labels import _CONTROL

if TYPE_CHECKING:  # pragma: no cover - types only
    from sessionkit.codexfiles.home import CodexHome

PathLike = Union[str, "os.PathLike[str]"]
SCRIPTS_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOME_FLAGS = ("--codex-dir", "--sqlite-home")  # rebuilt from the home, never copied from argv
PATH_FLAGS = ("--manifest", "--restore-db", "--from", "--to")  # values made absolute when re-run elsewhere


def quote(arg: object) -> str:
    """One shell word; a word with bytes that are not UTF-8 or with a control character (newline,
    ESC, BEL, DEL, C1, bidi marks) becomes bash's $'\\xNN' form: pasted, it means exactly that word."""
    text = os.fspath(arg) if isinstance(arg, os.PathLike) else str(arg)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # surrogate-escaped bytes of a file name: print them as escapes
        return _dollar_quote(os.fsencode(text))
    if _CONTROL.search(text):
        return _dollar_quote(text.encode("utf-8"))
    return shlex.quote(text)


def _dollar_quote(raw: bytes) -> str:
    """bash's $'...' form: printable ASCII as it is, every other byte as \\xNN (one byte each)."""
    return "$'" + "".join(chr(b) if 0x20 <= b < 0x7f and b not in (0x27, 0x5c) else "\\x%02x" % b
                          for b in raw) + "'"


def args_text(words: Sequence[object]) -> str:
    """Arguments as one line to paste: each word quoted once, here at the edge."""
    return " ".join(quote(w) for w in words)


def interpreter() -> str:
    """The Python that runs us, absolute: the one the pasted command will find again."""
    exe = sys.executable
    return exe if exe and os.path.isabs(exe) else "python3"


def script_path(script: str) -> str:
    return os.path.join(SCRIPTS_DIR, script)


def script_command(script: str, *args: object, home: Optional[PathLike] = None,
                   sqlite_home: Optional[PathLike] = None) -> str:
    """`<python> <abs scripts/script> [--codex-dir H] [--sqlite-home S] args...`, each word quoted."""
    words: List[object] = [interpreter(), script_path(script)]
    if home is not None:
        words += ["--codex-dir", os.path.abspath(os.fspath(home))]
    if sqlite_home is not None:
        words += ["--sqlite-home", os.path.abspath(os.fspath(sqlite_home))]
    words += _absolute_paths(args)
    return args_text(words)


def _absolute_paths(args: Sequence[object]) -> List[object]:
    """The value of every path flag (--manifest, --restore-db, ...) made absolute: a printed command
    runs the same from any folder, whatever folder the user typed it relative to."""
    out: List[object] = []
    for n, word in enumerate(args):
        prev = args[n - 1] if n else None
        if isinstance(prev, str) and prev in PATH_FLAGS and isinstance(word, (str, os.PathLike)):
            word = os.path.abspath(os.path.expanduser(os.fspath(word)))
        elif isinstance(word, str) and word.partition("=")[0] in PATH_FLAGS and "=" in word:
            flag, _eq, value = word.partition("=")
            word = f"{flag}={os.path.abspath(os.path.expanduser(value))}"
        out.append(word)
    return out


def db_folder(home: "CodexHome") -> Optional[str]:
    """The state DB's folder when it is not the home: named in every command, so the pasted command
    uses the same DB whatever config.toml or $CODEX_SQLITE_HOME say in the user's shell."""
    folder = home.state_db.path.parent
    return None if os.path.abspath(str(folder)) == os.path.abspath(str(home.root)) else str(folder)


def home_command(home: "CodexHome", script: str, *args: object) -> str:
    """A command on this home and its state DB (the one this run used)."""
    return script_command(script, *args, home=home.root, sqlite_home=db_folder(home))


def report_command(report: Dict[str, Any], script: str, *args: object) -> str:
    """A command on the home and state DB an audit report names (for text built from the report alone)."""
    root = str(report.get("codex_dir") or "")
    db = os.path.dirname(str((report.get("state_db") or {}).get("path") or "")) or root
    same = os.path.abspath(db) == os.path.abspath(root)
    return script_command(script, *args, home=root or None, sqlite_home=None if same else db)


def rerun_command(home: "CodexHome", argv: Sequence[str], script: Optional[str] = None) -> str:
    """The command line being run, pasteable elsewhere: home flags rebuilt, path values absolute."""
    if script is None:
        script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "session_audit.py"
    args: List[str] = []
    skip = False
    items = list(argv)
    for n, word in enumerate(items):
        if skip:
            skip = False
            continue
        flag, eq, value = word.partition("=")
        if word.startswith("--") and flag in HOME_FLAGS:
            skip = not eq
            continue
        if word.startswith("--") and flag in PATH_FLAGS:
            if not eq:
                if n + 1 < len(items):
                    args += [flag, os.path.abspath(os.path.expanduser(items[n + 1]))]
                    skip = True
                continue
            args.append(f"{flag}={os.path.abspath(os.path.expanduser(value))}")
            continue
        args.append(word)
    return home_command(home, script, *args)


def demo_command() -> Optional[str]:
    """`make -C <source folder> demo` where the sample home builder exists (a source checkout)."""
    repo = os.path.dirname(SCRIPTS_DIR)
    if os.path.isfile(os.path.join(repo, "Makefile")) and os.path.isfile(os.path.join(repo, "tests", "demo.py")):
        return "make -C " + quote(repo) + " demo"
    return None


def demo_hint() -> str:
    """The end of the missing-home message: where to try the scripts on a sample home."""
    cmd = demo_command()
    if cmd:
        return f"{cmd} builds a sample home with every problem and shows the audit on it)"
    return "`make demo` in the skill's source folder builds a sample home to try it on)"
