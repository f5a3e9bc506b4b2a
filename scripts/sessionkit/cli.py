"""What every script's main() shares: common flags, error handling, output encoding."""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from typing import Any, Callable, List, NoReturn, Optional

from . import EXIT_ERROR, UserError


COMMAND: List[str] = []  # the command line being run, to hand back to a user when it cannot write


def add_home_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--codex-dir", metavar="DIR",
                        help="Codex home to work on (default: $CODEX_HOME, else ~/.codex).")
    parser.add_argument("--sqlite-home", metavar="DIR",
                        help="folder holding state_5.sqlite (default: sqlite_home in config.toml, "
                             "else $CODEX_SQLITE_HOME, else the Codex home).")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object instead of the text report.")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


class Parser(argparse.ArgumentParser):
    """argparse that reports bad flags in one line with exit code 2 (as argparse does)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False))


def run(main: Callable[[Optional[List[str]]], int], argv: Optional[List[str]] = None) -> int:
    """Run a script's main with the error policy: one line on stderr and exit 2, never a traceback."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")  # type: ignore[attr-defined]
        except (AttributeError, ValueError):
            pass
    script = getattr(sys.modules.get(main.__module__), "__file__", None) or (sys.argv[0] if sys.argv else "script")
    prog = os.path.basename(script)
    COMMAND[:] = [sys.executable, os.path.abspath(script), *(sys.argv[1:] if argv is None else argv)]
    try:
        return main(argv)
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_ERROR
    except (OSError, sqlite3.Error) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - a bug of ours: still one line, never a traceback
        if os.environ.get("SESSION_MIGRATION_DEBUG"):
            raise
        print(f"{prog}: internal error ({type(exc).__name__}: {exc}); nothing more was changed. "
              f"Re-run with SESSION_MIGRATION_DEBUG=1 for details and report it.", file=sys.stderr)
        return EXIT_ERROR
