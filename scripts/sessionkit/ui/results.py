"""What a run did, in plain words, for the four writers (migration, import, repair, rollback).

One rendering: what changed (each session by its label: name else title, date, folder), what
was skipped and why, the whole undo and verify commands, and whether older runs are still
applied. The raw counters of the result go to --verbose (and --json, printed elsewhere).
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sessionkit.codexfiles.record import Record
from sessionkit.ui.labels import shown


LIMIT = 10  # sessions named per list; the rest are counted (--json lists them)
WIDTH = 100


class Outcome(Record):
    """A run's result as the user reads it. `changed` and `skipped` hold labels, not ids."""
    __slots__ = ("heading", "done", "changed", "skipped", "notes", "undo", "undo_then", "undo_label", "verify",
                 "older", "counters")
    heading: str  # "Provider Migration Result"
    done: str  # "4 sessions now use openai" (one line, the answer)
    changed: List[str]
    skipped: List[Tuple[str, str]]  # (label, reason)
    notes: List[str]
    undo: Optional[str]  # a whole command
    undo_then: List[Tuple[str, str]]  # (why, whole command) after `undo`
    undo_label: str
    verify: Optional[str]  # a whole command
    older: List[str]  # older runs still applied, as "kind, started"
    counters: Dict[str, Any]  # for --verbose only

    def __init__(self, heading: str, done: str, changed: Optional[List[str]] = None,
                 skipped: Optional[List[Tuple[str, str]]] = None, notes: Optional[List[str]] = None,
                 undo: Optional[str] = None, undo_then: Optional[List[Tuple[str, str]]] = None,
                 undo_label: str = "undo with:", verify: Optional[str] = None, older: Optional[List[str]] = None,
                 counters: Optional[Dict[str, Any]] = None) -> None:
        self.heading, self.done = heading, done
        self.changed = [] if changed is None else changed
        self.skipped = [] if skipped is None else skipped
        self.notes = [] if notes is None else notes
        self.undo, self.undo_label, self.verify = undo, undo_label, verify
        self.undo_then = [] if undo_then is None else undo_then
        self.older = [] if older is None else older
        self.counters = {} if counters is None else counters


# A quoted word (ui/commands.quote: '...' or $'...'), a path with spaces among them: wrapped whole.
# NUL never occurs in printed text (control characters from a home are escaped), so it holds the
# quoted word's spaces while textwrap breaks the line.
_QUOTED = re.compile(r"\$?'[^']*'")
_KEEP = "\x00"


def _wrapped(text: str, indent: str, subsequent: str) -> List[str]:
    """`text` wrapped at spaces, never inside a word nor inside a quoted word."""
    import textwrap  # only when a report is printed (not for --json)
    held = _QUOTED.sub(lambda m: m.group(0).replace(" ", _KEEP), text) if "'" in text else text
    lines = textwrap.wrap(indent + held, WIDTH, subsequent_indent=subsequent, break_long_words=False,
                          break_on_hyphens=False) or [indent + held]
    return [line.replace(_KEEP, " ") for line in lines] if held is not text else lines


def _listed(labels: Sequence[str], limit: int, indent: str = "  ") -> List[str]:
    """Up to `limit` entries, each wrapped at spaces (never cut), then how many more there are."""
    out = [line for text in labels[:limit] for line in _wrapped(text, indent, indent + "    ")]
    if len(labels) > limit:
        out.append(f"{indent}(and {len(labels) - limit} more; --json lists them)")
    return out


def render(o: Outcome, verbose: bool = False, limit: int = LIMIT) -> List[str]:
    """The result block: the answer first, then the sessions, the skips, undo, verify, older runs."""
    out = [f"=== {o.heading} ==="] + wrap(o.done)
    out += _listed(o.changed, limit)
    if o.skipped:
        out.append(f"Skipped {len(o.skipped)} (left as they were):")
        out += _listed([f"{name}: {why}" for name, why in o.skipped], limit)
    out += [line for note in o.notes for line in (wrap(note) if not note.startswith("  ") else [note])]
    if o.undo:
        out += [o.undo_label, f"  {o.undo}"]
        for why, cmd in o.undo_then:
            out += [f"  then ({why}):", f"  {cmd}"]
    if o.verify:
        out += ["Verify, then restart your editor's Codex:", f"  {o.verify}"]
    if o.older:
        out.append(f"Older runs still applied ({len(o.older)}; each is undone on its own, newest first):")
        out += _listed(o.older, 3)
    if verbose and o.counters:
        out.append("Counters:")
        out += [f"  {k}: {v}" for k, v in o.counters.items()]
    return out


def wrap(text: str, indent: str = "    ") -> List[str]:
    """One line of words wrapped at spaces, never cut (a long path stays whole, and a quoted one
    with spaces in it: print paths in prose with ui/commands.quote)."""
    return _wrapped(text, "", indent)


def nothing_to_do(what: str) -> str:
    """The whole output of a dry-run with nothing to do: one line (exit 0)."""
    return f"Nothing to do: {what}."


def labels_for(names: Dict[str, str], ids: Sequence[str]) -> List[str]:
    """Each id's label where known (`names` is keyed by the ids as asked), else the id itself (escaped)."""
    return [names.get(t) or shown(t) for t in ids]
