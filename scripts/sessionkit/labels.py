"""Name a session as its user knows it (title or first prompt, date, folder); times as dates."""
from __future__ import annotations

import os
from datetime import datetime
from typing import TYPE_CHECKING, Dict, Iterable, Optional

from .paths import safe_str

if TYPE_CHECKING:  # pragma: no cover - types only
    from .audit import AuditInputs

TITLE_CHARS = 40


def readable_time(value: object) -> str:
    """Epoch seconds or milliseconds as a local `YYYY-MM-DD HH:MM`; anything else as it is."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "none" if value is None else str(value)
    secs = value / 1000 if value > 10_000_000_000 else value
    try:
        return datetime.fromtimestamp(secs).strftime("%Y-%m-%d %H:%M")
    except (OverflowError, OSError, ValueError):
        return str(value)


def short_title(text: Optional[str], limit: int = TITLE_CHARS) -> str:
    line = " ".join((text or "").split())
    if not line:
        return "(no title)"
    return '"' + (line if len(line) <= limit else line[:limit - 3] + "...") + '"'


def session_names(inputs: "AuditInputs", ids: Iterable[str]) -> Dict[str, str]:
    """`"first prompt", 2025-03-01 09:30, /work/proj` for each id: from its row, else from its file."""
    wanted = {t.lower(): t for t in ids}
    out: Dict[str, str] = {}
    for row in inputs.rows:
        key = row.id.lower()
        if key in wanted:
            out[wanted.pop(key)] = (f"{short_title(row.preview)}, {readable_time(row.created_at)}, "
                                    f"{safe_str(row.cwd) or '(no folder)'}")
    for key, tid in wanted.items():  # no row: what the file says
        files = inputs.index.by_thread.get(key, [])
        if not files:
            out[tid] = "(unknown session)"
            continue
        meta = inputs.metas.get(files[0].key)
        cwd = meta.cwd if meta is not None and meta.cwd else ""
        out[tid] = f"(not indexed), {files[0].date}, {safe_str(cwd) or '(no folder)'}"
    return out


def relative(path: object, root: object) -> str:
    """A path inside the home without the home's prefix; any other path whole."""
    text, base = safe_str(path), safe_str(root).rstrip(os.sep) + os.sep
    return text[len(base):] if text.startswith(base) else text
