"""What every script's main() shares: common flags, error handling, output encoding."""
from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import sys
from typing import Any, Callable, Iterable, List, NoReturn, Optional, Sequence

from sessionkit import EXIT_ERROR, EXIT_FINDINGS, Lines, UserError
from sessionkit.codexfiles.ids import norm_id
from sessionkit.codexfiles.paths import is_windows_absolute, safe_str
from sessionkit.codexfiles.rollout_index import not_unicode
from sessionkit.codexfiles.home import MissingHome
from sessionkit.ui.commands import demo_hint
from sessionkit.ui.labels import shown


COMMAND: List[str] = []  # the command line being run, to hand back to a user when it cannot write


def add_home_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--codex-dir", metavar="DIR", type=path_arg,
                        help="Codex home to work on (default: $CODEX_HOME, else ~/.codex).")
    parser.add_argument("--sqlite-home", metavar="DIR", type=path_arg,
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


def _plain_text(text: str, what: str) -> str:
    """Not empty, no control character, valid UTF-8: the checks every value that reaches a row shares."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{what} is empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise argparse.ArgumentTypeError(f"{what} {safe_str(text)!r} holds a control character")
    if not_unicode(text):
        raise argparse.ArgumentTypeError(f"{what} {safe_str(text)!r} is not valid UTF-8")
    return text


def path_arg(text: str) -> str:
    """A path on the command line: never empty (an empty one would silently mean the default)."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path (pass a real folder or leave the flag out)")
    if "\x00" in text:
        raise argparse.ArgumentTypeError("the path contains a NUL byte")
    return text


def existing_path_arg(text: str) -> str:
    """A file or folder that must exist now (a manifest, a run folder, a backup)."""
    path_arg(text)
    if not os.path.exists(os.path.expanduser(text)):
        raise argparse.ArgumentTypeError(f"no such file or folder: {safe_str(text)}")
    return text


def absolute_path_arg(text: str) -> str:
    """A path compared with values Codex stores, which are always absolute."""
    path_arg(text)
    _plain_text(text, "the path")
    if text.startswith("~"):
        raise argparse.ArgumentTypeError(f"{text!r}: ~ is not expanded here, write the absolute path")
    if not (text.startswith("/") or is_windows_absolute(text)):
        raise argparse.ArgumentTypeError(f"{text!r} is not an absolute path (Codex stores absolute ones)")
    return text


def provider_arg(text: str) -> str:
    """A model provider id as written into rows and line 1."""
    _plain_text(text, "the provider id")
    if text != text.strip():
        raise argparse.ArgumentTypeError(f"the provider id {text!r} has leading or trailing spaces")
    return text


_THREAD_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def thread_id_arg(text: str) -> str:
    """A Codex thread id (a UUID, as in rollout-<time>-<id>.jsonl)."""
    if not _THREAD_ID.match(text):
        raise argparse.ArgumentTypeError(
            f"{safe_str(text)!r} is not a thread id (a UUID such as 0199a213-81c0-7800-8aa1-bbab2a035a53)")
    return norm_id(text)


def require_known_threads(thread_ids: Sequence[str], row_ids: Iterable[str], file_ids: Iterable[str]) -> None:
    """A --thread-id this home has neither a row nor a rollout for is a typo, not "nothing to do"."""
    if not thread_ids:
        return
    known = set(row_ids) | set(file_ids)  # ids as they entered: ThreadRow.key, the walk's, thread_id_arg's
    unknown = [t for t in thread_ids if t not in known]
    if unknown:
        raise UserError(f"no thread {', '.join(unknown)} in this Codex home (no DB row, no rollout file)")


class Parser(argparse.ArgumentParser):
    """argparse that reports bad flags in one line with exit code 2 (as argparse does), and takes
    every flag only as spelled in full: a printed command copies the words as typed (`--codex h`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def plain(text: str) -> str:
    """Text for a terminal, escaped before any split (labels.shown, the one escaping): a newline in a
    title, folder or provider stays `\\n`; only the lines of a Lines are line breaks."""
    if isinstance(text, Lines):
        return "\n".join(shown(line) for line in text.parts)
    return shown(text)


def emit(text: str = "", file: Any = None) -> None:
    """print() for every human line a script writes: escaped at this one edge."""
    print(plain(text), file=file)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False))


def _stdout_gone() -> bool:
    """stdout's reader has closed the pipe (not some other pipe, such as one to Codex): then stdout
    is pointed at /dev/null so the interpreter's last flush says nothing either."""
    try:
        import select
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        gone = any(ev & select.POLLERR for _fd, ev in poller.poll(0))
    except (ImportError, AttributeError, OSError, ValueError):
        return False
    if gone:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    return gone


# The undo command of each run this process applied and handed back (runlog.writerun adds it): an
# error or Ctrl-C after that point must not say "nothing changed" (exit 2) with the run applied.
APPLIED_RUNS: List[str] = []


def applied_run(undo_command: str) -> None:
    """Record a run this process applied: from here on its changes stay whatever happens next."""
    APPLIED_RUNS.append(undo_command)


def _after_applied(prog: str, what: str) -> int:
    """What is said when the script stops after a run was applied: the run stands, with its undo."""
    print(f"{prog}: {what}", file=sys.stderr)
    n = len(APPLIED_RUNS)
    emit(f"{prog}: {'a run was' if n == 1 else f'{n} runs were'} applied before that and stay applied; "
         f"undo {'it' if n == 1 else 'them, newest first'} with:", file=sys.stderr)
    for cmd in reversed(APPLIED_RUNS):
        print(f"  {cmd}", file=sys.stderr)
    return EXIT_FINDINGS


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
    APPLIED_RUNS.clear()
    try:
        code = main(argv)
        sys.stdout.flush()  # here, not at exit: a reader gone (`| head -1`) meets the policy below
        return code
    except BaseException as exc:  # noqa: B902 - after an applied run: say so whatever stopped us
        if not APPLIED_RUNS or isinstance(exc, SystemExit):
            return _error_exit(prog, exc)
        if isinstance(exc, KeyboardInterrupt):
            return _after_applied(prog, "interrupted")
        if isinstance(exc, BrokenPipeError) and _stdout_gone():
            return _after_applied(prog, "output closed")
        code = _error_exit(prog, exc)
        return code if code != EXIT_ERROR else _after_applied(prog, "stopped by the error above")


def _error_exit(prog: str, exc: BaseException) -> int:
    """The error policy: one line on stderr and exit 2, never a traceback."""
    try:
        raise exc
    except SystemExit:  # argparse's --help or error: flushed here too, quietly if the reader is gone
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _stdout_gone()
        raise
    except MissingHome as exc:
        emit(f"{prog}: error: {exc.message(demo_hint())}", file=sys.stderr)
        return EXIT_ERROR
    except UserError as exc:
        msg = exc.args[0] if exc.args and isinstance(exc.args[0], Lines) else Lines([str(exc)])
        emit(Lines([f"{prog}: error: {msg.parts[0]}", *msg.parts[1:]]), file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError as exc:
        if _stdout_gone():  # the reader stopped (`| head`): nothing to say to it, as any Unix tool
            return EXIT_ERROR
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (OSError, sqlite3.Error) as exc:
        emit(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - a bug of ours: still one line, never a traceback
        if os.environ.get("SESSION_MIGRATION_DEBUG"):
            raise
        print(f"{prog}: internal error ({type(exc).__name__}: {exc}); nothing more was changed. "
              f"Re-run with SESSION_MIGRATION_DEBUG=1 for details and report it.", file=sys.stderr)
        return EXIT_ERROR
