"""Read a whole rollout once to build the DB row Codex's backfill would write for it."""
from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional

from sessionkit.codexfiles.rollout_index import not_unicode
from sessionkit.codexfiles.statedb import unbindable
from sessionkit.codexfiles.paths import open_regular
from sessionkit.codexfiles.zstd import ZST, open_zst

SCAN_LIMIT = 256 * 1024 * 1024
LINE_LIMIT = 16 * 1024 * 1024  # a line longer than this is read past in pieces, not parsed
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class Unimportable(Exception):
    """Why a rollout cannot become a row; the plan skips that orphan with this reason."""


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _str(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


def _dict(value: Any) -> Dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _epoch(ts: Optional[str]) -> Optional[float]:
    if not ts:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def _texts(content: Any) -> str:
    parts = content if isinstance(content, list) else []
    return "".join(_str(c.get("text")) or "" for c in parts if isinstance(c, dict))


def _user_text(obj: Dict[str, Any]) -> Optional[str]:
    """The user's own words in a rollout line, if it is a user message (not injected context)."""
    t, p = obj.get("type"), obj.get("payload")
    if not isinstance(p, dict):
        return None
    if t == "event_msg" and p.get("type") == "user_message" and isinstance(p.get("message"), str):
        return p["message"]
    if t == "event_msg" and p.get("type") == "item_completed":
        item = _dict(p.get("item"))
        if item.get("type") == "UserMessage":
            return _texts(item.get("content"))
    return None


def _holds_lone_surrogate(obj: Any) -> bool:
    """Any string (key or value) in a decoded line that is not valid Unicode."""
    stack = [obj]
    while stack:
        cur = stack.pop()
        if isinstance(cur, str):
            if not_unicode(cur):
                return True
        elif isinstance(cur, dict):
            stack.extend(cur.keys())
            stack.extend(cur.values())
        elif isinstance(cur, list):
            stack.extend(cur)
    return False


def _bounded_lines(fh: Any) -> Any:
    """The file's lines, each read at most LINE_LIMIT bytes at a time: a longer line is read past in
    pieces and yielded as b"" (skipped), so a small compressed file cannot fill memory."""
    read = 0
    while read <= SCAN_LIMIT:
        raw = fh.readline(LINE_LIMIT)
        if not raw:
            return
        read += len(raw)
        if len(raw) >= LINE_LIMIT and not raw.endswith(b"\n"):
            while True:  # the rest of an over-long line, piece by piece, never held whole
                piece = fh.readline(LINE_LIMIT)
                read += len(piece)
                if not piece or piece.endswith(b"\n") or read > SCAN_LIMIT:
                    break
            yield b""
            continue
        yield raw


def _records(fh: Any) -> Any:
    """The JSON objects of a rollout as Codex's parser reads them: a line serde_json rejects (not
    JSON, not an object, a lone surrogate escape) is skipped, as Codex skips it; so is a line over
    LINE_LIMIT, which no row column needs whole, and nothing past SCAN_LIMIT is read."""
    for raw in _bounded_lines(fh):
        if not raw:
            continue
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if not isinstance(obj, dict):
            continue
        if _SURROGATE_ESCAPE.search(raw) and _holds_lone_surrogate(obj):
            continue
        yield obj


def row_from_rollout(path: Path, thread_id: str, archived: bool, default_provider: str) -> Dict[str, Any]:
    """The `threads` columns for an unindexed rollout, from session_meta, turn_context and messages.
    Raises Unimportable when the file gives no row SQLite (or Codex) would take."""
    meta: Dict[str, Any] = {}
    ctx: Dict[str, Any] = {}
    first_user: Optional[str] = None
    fallback_user: Optional[str] = None
    tokens = 0
    compressed = str(path).endswith(".jsonl" + ZST)  # read decompressed; the row names the .zst, as Codex's does
    try:
        with (open_zst(str(path)) if compressed else open_regular(path)) as fh:
            for obj in _records(fh):
                t, p = obj.get("type"), obj.get("payload")
                if t == "session_meta" and not meta and isinstance(p, dict):
                    meta = p
                elif t == "turn_context" and not ctx and isinstance(p, dict):
                    ctx = p
                elif t == "event_msg" and isinstance(p, dict) and p.get("type") == "token_count":
                    total = _dict(_dict(p.get("info")).get("total_token_usage")).get("total_tokens")
                    if isinstance(total, int) and not isinstance(total, bool):
                        tokens = total
                if first_user is None:
                    first_user = _user_text(obj)
                if fallback_user is None and t == "response_item" and isinstance(p, dict) and p.get("role") == "user":
                    text = _texts(p.get("content"))
                    if text and not text.lstrip().startswith("<"):
                        fallback_user = text
            st = os.stat(path) if compressed else os.fstat(fh.fileno())
    except OSError as exc:
        raise Unimportable(f"cannot read the file ({exc.strerror or exc})") from None
    if not meta:
        raise Unimportable("no session_meta line Codex can parse")
    created = _epoch(_str(meta.get("timestamp"))) or st.st_mtime
    source = meta.get("source", "cli")
    if not isinstance(source, (str, dict)):
        raise Unimportable(f"session_meta.source is a {type(source).__name__}")
    git = _dict(meta.get("git"))
    message = first_user if first_user is not None else (fallback_user or "")
    profile = ctx.get("permission_profile", ctx.get("sandbox_policy"))
    provider = _str(meta.get("model_provider"))
    row = {
        "id": thread_id, "rollout_path": str(path),
        "created_at": int(created), "created_at_ms": int(created * 1000),
        "updated_at": int(st.st_mtime), "updated_at_ms": int(st.st_mtime * 1000),
        "source": source if isinstance(source, str) else _compact(source),
        "model_provider": provider if provider is not None else default_provider,
        "cwd": _str(meta.get("cwd")) or "", "title": message, "first_user_message": message, "preview": message,
        "sandbox_policy": _compact(profile) if profile is not None else "",
        "approval_mode": _str(ctx.get("approval_policy")) or "", "tokens_used": tokens, "has_user_event": 0,
        "archived": int(archived), "archived_at": int(st.st_mtime) if archived else None,
        "git_sha": _str(git.get("commit_hash")), "git_branch": _str(git.get("branch")),
        "git_origin_url": _str(git.get("repository_url")),
        "cli_version": _str(meta.get("cli_version")) or "", "model": _str(ctx.get("model")),
        "reasoning_effort": _str(ctx.get("effort")), "history_mode": _str(meta.get("history_mode")) or "legacy",
        "originator": _str(meta.get("originator")), "thread_source": _str(meta.get("thread_source")),
    }
    bad = _unbindable_column(row)
    if bad:
        raise Unimportable(bad)
    return row


def _unbindable_column(row: Dict[str, Any]) -> Optional[str]:
    why = unbindable(row.values())
    if why is None:
        return None
    names: List[str] = [k for k, v in row.items() if unbindable((v,))]
    return f"column {names[0]} would hold {why}"
