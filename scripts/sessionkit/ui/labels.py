"""Name a session as its user knows it (its name as the picker shows it, else its title; date,
folder), times as dates, and every string from a home printed with its control characters escaped."""
from __future__ import annotations

import os
import re
from datetime import datetime
from typing import Any, Dict, Iterable, List, Optional

from sessionkit.codexfiles.ids import norm_id
from sessionkit.codexfiles.paths import safe_str
from sessionkit.codexfiles.thread_names import named_threads, names_from_session_index

TITLE_CHARS = 40
# C0 and C1 controls, DEL, and the format characters that reorder or hide text on a terminal
# (bidi overrides and isolates, zero-width joiners): none of them may reach a terminal raw.
# Every character that moves the cursor, hides, reorders or breaks what a terminal shows: C0/C1
# controls, zero-width and direction marks, line/paragraph separators, bidi embeddings and isolates,
# invisible operators, the BOM. The one set: cli.plain() escapes the same (edges).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff"
                      "\ufff9-\ufffb]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\e"}


def _escape(match: "re.Match[str]") -> str:
    c = match.group(0)
    named = _NAMED.get(c)
    if named:
        return named
    return "\\x%02x" % ord(c) if ord(c) < 0x100 else "\\u%04x" % ord(c)


def shown(text: object) -> str:
    """A string from a home as it may be printed: not-UTF-8 bytes and lone surrogates as
    backslash escapes, control characters (cursor moves, OSC 52 clipboard writes) as `\\e`, `\\x07`."""
    return _CONTROL.sub(_escape, safe_str("" if text is None else text))


# A run's kind (its journal's begin record, its folder's name) as a sentence says it: the one table.
RUN_KIND_WORDS = {"session_repair": "repair", "provider_migration": "provider migration", "session_import": "import",
                  "session_recover": "recovery", "decompress": "decompression"}


def run_kind_words(kind: object) -> str:
    """`provider_migration` as `provider migration`; a kind the table lacks as it is (escaped)."""
    return shown(RUN_KIND_WORDS.get(str(kind), str(kind or "?")))


def readable_time(value: object) -> str:
    """Epoch seconds or milliseconds as a local `YYYY-MM-DD HH:MM`; anything else as it is."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "none" if value is None else shown(value)
    secs = value / 1000 if value > 10_000_000_000 else value
    try:
        return datetime.fromtimestamp(secs).strftime("%Y-%m-%d %H:%M")
    except (OverflowError, OSError, ValueError):
        return str(value)


def short_title(text: Optional[str], limit: int = TITLE_CHARS) -> str:
    """A title or name quoted, shortened to `limit` characters (a label, not a value to copy)."""
    line = shown(" ".join((text or "").split()))
    if not line:
        return "(no title)"
    return '"' + (line if len(line) <= limit else line[:limit - 1] + "…") + '"'


def label(name: Optional[str], title: Optional[str]) -> str:
    """The one naming rule: the thread's name when it has one (as the picker shows), else its title."""
    return short_title(name) if name and name.strip() else short_title(title)


def session_label(name: Optional[str], title: Optional[str], created: object, cwd: object) -> str:
    """The one label of a session on every screen (a plan, a result, a rollback's preview and result),
    so a user can follow one session across them: name else title, date, folder."""
    return f"{label(name, title)}, {readable_time(created)}, {shown(cwd) or '(no folder)'}"


def home_names(home: Any) -> Dict[str, str]:
    """`threads.name` by lower-case id, else the latest name session_index.jsonl records."""
    out = dict(names_from_session_index(home))
    try:
        out.update(named_threads(home.state_db.path) or {})
    except Exception:  # noqa: BLE001 - names only make labels nicer; never the end of a run
        pass
    return out


def thread_names(inputs: Any) -> Dict[str, str]:
    """home_names of the audit's AuditInputs' home."""
    return home_names(inputs.home)


def session_names(inputs: Any, ids: Iterable[str]) -> Dict[str, str]:
    """`"name or first prompt", 2025-03-01 09:30, /work/proj` for each id: from its row, else its file."""
    wanted = {norm_id(t): t for t in ids}
    out: Dict[str, str] = {}
    if not wanted:
        return out
    names = thread_names(inputs)
    for key in list(wanted):
        row = inputs.rows_by_id.get(key)
        if row is not None:
            out[wanted.pop(key)] = session_label(names.get(key), row.preview, row.created_at, row.cwd)
    for key, tid in wanted.items():  # no row: what the file says
        files = inputs.index.by_thread.get(key, [])
        if not files:
            out[tid] = "(unknown session)"
            continue
        meta = inputs.metas.get(files[0].key)
        cwd = meta.cwd if meta is not None and meta.cwd else ""
        title = label(names.get(key), None) if names.get(key) else "(not indexed)"
        out[tid] = f"{title}, {files[0].date}, {shown(cwd) or '(no folder)'}"
    return out


def relative(path: object, root: object) -> str:
    """A path inside the home without the home's prefix; any other path whole (escaped)."""
    text, base = safe_str(path), safe_str(root).rstrip(os.sep) + os.sep
    return shown(text[len(base):] if text.startswith(base) else text)


def names_from_db(home: Any, ids: Iterable[str]) -> Dict[str, str]:
    """The same labels read straight from the home's state DB and name index (for a run that did not
    read the whole home, such as a rollback): by each id as given (a journal's); ids the DB does not
    know are left out."""
    import sqlite3
    from sessionkit.codexfiles.statedb import open_readonly
    asked: Dict[str, List[str]] = {}
    for t in ids:  # ids as a journal records them: normalised here, where they enter
        asked.setdefault(norm_id(t), []).append(t)
    wanted = sorted(asked)
    out: Dict[str, str] = {}
    if not wanted:
        return out
    try:
        conn = open_readonly(home.state_db.path)
    except (sqlite3.Error, OSError):
        return out
    names = home_names(home)
    try:
        cols = {r[1] for r in conn.execute("PRAGMA table_info(threads)")}
        title = next((c for c in ("title", "preview", "first_user_message") if c in cols), None)
        pick = ", ".join(["id", title or "NULL", "created_at" if "created_at" in cols else "NULL",
                          "cwd" if "cwd" in cols else "NULL"])
        for n in range(0, len(wanted), 500):
            chunk = wanted[n:n + 500]
            for tid, ttl, created, cwd in conn.execute(
                    f"SELECT {pick} FROM threads WHERE lower(id) IN ({','.join('?' * len(chunk))})", chunk):
                key = norm_id(str(tid))  # a row's id as the DB holds it: read here
                text = session_label(names.get(key), ttl if isinstance(ttl, str) else None, created, cwd)
                for t in asked.get(key, ()):
                    out[t] = text
    except sqlite3.Error:
        pass
    finally:
        conn.close()
    return out
