"""Read a whole rollout once to build the DB row Codex's backfill would write for it."""
from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, Optional

SCAN_LIMIT = 256 * 1024 * 1024


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _epoch(ts: Optional[str]) -> Optional[float]:
    if not ts:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _user_text(obj: Dict[str, Any]) -> Optional[str]:
    """The user's own words in a rollout line, if it is a user message (not injected context)."""
    t, p = obj.get("type"), obj.get("payload")
    if not isinstance(p, dict):
        return None
    if t == "event_msg" and p.get("type") == "user_message" and isinstance(p.get("message"), str):
        return p["message"]
    if t == "event_msg" and p.get("type") == "item_completed":
        item = p.get("item") or {}
        if item.get("type") == "UserMessage":
            texts = [c.get("text", "") for c in item.get("content") or [] if isinstance(c, dict)]
            return "".join(texts)
    return None


def row_from_rollout(path: Path, thread_id: str, archived: bool, default_provider: str) -> Dict[str, Any]:
    """The `threads` columns for an unindexed rollout, from session_meta, turn_context and messages."""
    meta: Dict[str, Any] = {}
    ctx: Dict[str, Any] = {}
    first_user: Optional[str] = None
    fallback_user: Optional[str] = None
    tokens = 0
    read = 0
    with open(path, "rb") as fh:
        for raw in fh:
            read += len(raw)
            if read > SCAN_LIMIT:
                break
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(obj, dict):
                continue
            t, p = obj.get("type"), obj.get("payload")
            if t == "session_meta" and not meta and isinstance(p, dict):
                meta = p
            elif t == "turn_context" and not ctx and isinstance(p, dict):
                ctx = p
            elif t == "event_msg" and isinstance(p, dict) and p.get("type") == "token_count":
                total = ((p.get("info") or {}).get("total_token_usage") or {}).get("total_tokens")
                if isinstance(total, int):
                    tokens = total
            if first_user is None:
                first_user = _user_text(obj)
            if fallback_user is None and t == "response_item" and isinstance(p, dict) and p.get("role") == "user":
                text = "".join(c.get("text", "") for c in p.get("content") or [] if isinstance(c, dict))
                if text and not text.lstrip().startswith("<"):
                    fallback_user = text
    st = os.stat(path)
    created = _epoch(meta.get("timestamp")) or st.st_mtime
    source = meta.get("source", "cli")
    git = meta.get("git") if isinstance(meta.get("git"), dict) else {}
    message = first_user if first_user is not None else (fallback_user or "")
    profile = ctx.get("permission_profile", ctx.get("sandbox_policy"))
    return {
        "id": thread_id, "rollout_path": str(path),
        "created_at": int(created), "created_at_ms": int(created * 1000),
        "updated_at": int(st.st_mtime), "updated_at_ms": int(st.st_mtime * 1000),
        "source": source if isinstance(source, str) else _compact(source),
        "model_provider": meta.get("model_provider") if isinstance(meta.get("model_provider"), str) else default_provider,
        "cwd": meta.get("cwd") or "", "title": message, "first_user_message": message, "preview": message,
        "sandbox_policy": _compact(profile) if profile is not None else "",
        "approval_mode": ctx.get("approval_policy") or "", "tokens_used": tokens, "has_user_event": 0,
        "archived": int(archived), "archived_at": int(st.st_mtime) if archived else None,
        "git_sha": git.get("commit_hash"), "git_branch": git.get("branch"), "git_origin_url": git.get("repository_url"),
        "cli_version": meta.get("cli_version") or "", "model": ctx.get("model"),
        "reasoning_effort": ctx.get("effort"), "history_mode": meta.get("history_mode") or "legacy",
        "originator": meta.get("originator"), "thread_source": meta.get("thread_source"),
    }
