"""Build the read-only audit report: counts, integrity, visibility, orphans, running Codex."""
from __future__ import annotations

import gc
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from . import UserError
from .commands import report_command
from .home import CodexHome, StateDb
from .locks import CodexActivity, scan_activity
from .paths import home_prefix_counts, is_inside, resolves_inside, safe_str
from .progress import Progress
from .rollout_index import RolloutFile, RolloutIndex, SessionMeta, build_index, load_session_meta
from .statedb import ThreadRow, load_threads

INTERACTIVE_SOURCES = ("cli", "vscode")
ACTIVE_WINDOW_S = 300  # an unindexed rollout written this recently may still be in use
HIDE_REASONS = ("archived", "missing_rollout_file", "other_provider", "non_interactive_source", "cwd")
DB_ONLY_REASONS = ("rollout_not_indexed", "stale_rollout_path", "empty_preview", "db_provider_differs")
INTEGRITY_KEYS = (
    "disk_not_in_db", "db_not_on_disk", "missing_rollout_path", "duplicate_rollout_id",
    "missing_active_rows", "missing_archived_rows", "stale_rows", "archive_mismatches",
    "duplicate_db_paths", "malformed_file_names", "session_meta_id_mismatch",
    "rollout_path_outside_home", "provider_mismatch", "line1_unreadable", "compressed_rollouts",
    "unreadable_paths",
)


@dataclass
class AuditInputs:
    """Everything read from the home, once; the repair and migration plans reuse it."""

    home: CodexHome
    rows: List[ThreadRow]
    index: RolloutIndex
    metas: Dict[str, SessionMeta]  # by file path
    activity: CodexActivity

    def meta_for(self, rf: RolloutFile) -> SessionMeta:
        return self.metas[rf.key]


def gather(home: CodexHome, progress: Optional[Progress] = None) -> AuditInputs:
    """One walk, one SELECT, one bounded line-1 read per rollout file."""
    progress = progress or Progress(None)
    collecting = gc.isenabled()
    gc.disable()  # hundreds of thousands of small acyclic objects: no cycles to collect meanwhile
    try:
        return _gather(home, progress)
    finally:
        gc.freeze()  # what was read lives to the end: later collections need not walk it again
        if collecting:
            gc.enable()


def _gather(home: CodexHome, progress: Progress) -> AuditInputs:
    progress.phase("scanning rollouts")
    index = build_index(home.root)
    progress.phase("reading the state DB")
    rows = load_threads(home.state_db.path)
    metas: Dict[str, SessionMeta] = {}
    total = len(index.files)
    for n, rf in enumerate(index.files, 1):
        if rf.compressed:
            metas[rf.key] = SessionMeta(error="zstd-compressed rollout (not readable here)")
        elif rf.is_symlink and not resolves_inside(rf.path, home.root):
            metas[rf.key] = SessionMeta(error="a symlink to outside the Codex home (not followed)")
        else:
            metas[rf.key] = load_session_meta(rf.key)
        progress.tick("reading line 1 of each rollout", n, total)
    progress.done()
    return AuditInputs(home=home, rows=rows, index=index, metas=metas, activity=scan_activity(home.root))


def _sample(items: List[str], n: int) -> List[str]:
    return [safe_str(i) for i in items[:n]]


def _file_for_row(row: ThreadRow, inputs: AuditInputs) -> Optional[RolloutFile]:
    """The rollout Codex would read for a row: its recorded path if indexed, else the only one by id."""
    rf = inputs.index.by_path.get(row.rollout_path)
    if rf is not None:
        return rf
    cands = inputs.index.by_thread.get(row.id.lower(), [])
    return cands[0] if len(cands) == 1 else None


def _exists(path: str) -> bool:
    if not path or "\x00" in path or not os.path.isabs(path):
        return False  # Codex writes absolute paths only
    try:
        return os.path.isfile(path)
    except (OSError, ValueError):
        return False


def integrity(inputs: AuditInputs, max_samples: int) -> Dict[str, Any]:
    rows, index, root = inputs.rows, inputs.index, inputs.home.root
    found: Dict[str, List[str]] = {k: [] for k in INTEGRITY_KEYS}
    row_ids = {r.id.lower() for r in rows}
    row_paths = {r.rollout_path for r in rows}
    own = (inputs.activity.agent_thread_id or "").lower()
    for rf in index.files:  # as `codex doctor` counts them: files no row points at by path
        if rf.key not in row_paths and rf.thread_id != own:
            found["missing_archived_rows" if rf.archived else "missing_active_rows"].append(rf.key)
    for tid, files in sorted(index.by_thread.items()):
        if tid not in row_ids and tid != own:
            found["disk_not_in_db"].append(tid)
        if len(files) > 1:
            plain = [f for f in files if "_" not in f.name]
            names = Counter(f.name for f in files)
            if len(plain) > 1 or any(c > 1 for c in names.values()):
                found["duplicate_rollout_id"].append(tid)
    path_count = Counter(r.rollout_path for r in rows)
    found["duplicate_db_paths"] = sorted(p for p, n in path_count.items() if n > 1)
    outside: List[str] = []
    for r in sorted(rows, key=lambda r: r.id):
        if r.id.lower() not in index.by_thread:
            found["db_not_on_disk"].append(r.id)
        exists = r.rollout_path in index.by_path or _exists(r.rollout_path)
        if not exists:
            found["missing_rollout_path"].append(r.id)
            found["stale_rows"].append(r.id)
        if r.rollout_path and not is_inside(r.rollout_path, root):
            found["rollout_path_outside_home"].append(r.id)
            outside.append(r.rollout_path)
        rf = index.by_path.get(r.rollout_path) if exists else None
        if rf is not None and rf.archived != r.archived:
            found["archive_mismatches"].append(r.id)
        rf = rf or _file_for_row(r, inputs)
        if rf is None:
            continue
        meta = inputs.meta_for(rf)
        if meta.error is None and meta.id and meta.id.lower() != r.id.lower():
            found["session_meta_id_mismatch"].append(r.id)
        if meta.error is None and meta.has_provider and meta.model_provider != r.model_provider:
            found["provider_mismatch"].append(r.id)
    for rf in index.files:
        meta = inputs.meta_for(rf)
        if rf.compressed:
            found["compressed_rollouts"].append(rf.key)
        elif meta.error:
            found["line1_unreadable"].append(f"{rf.key}: {meta.error}")
    found["malformed_file_names"] = [str(p) for p in index.malformed]
    found["unreadable_paths"] = [f"{p}: {why}" for p, why in index.unreadable] + \
        [f"{p}: a symlinked folder (not followed)" for p in index.skipped_links]
    out: Dict[str, Any] = {}
    for key in INTEGRITY_KEYS:
        out[f"{key}_count"] = len(found[key])
        out[f"{key}_sample"] = _sample(found[key], max_samples)
    out["duplicate_rollout_paths"] = {
        tid: [safe_str(f.path) for f in index.by_thread[tid]]
        for tid in found["duplicate_rollout_id"][:max_samples]}
    moved = None
    prefixes = home_prefix_counts(outside, root)
    if prefixes:
        old, n = prefixes.most_common(1)[0]
        moved = {"old_prefix": safe_str(old), "new_prefix": safe_str(root), "rows": n,
                 "remap_arg": f"--remap-prefix {safe_str(old)}={safe_str(root)}"}
    out["moved_home"] = moved
    return out


def _source_kind(meta: Optional[SessionMeta], row: Optional[ThreadRow]) -> str:
    if row is not None:
        return row.source_kind
    return meta.source_kind if meta else ""


def visibility(inputs: AuditInputs, provider: str, cwd: Optional[str],
               max_samples: int) -> Dict[str, Any]:
    """What a default `thread/list` shows (current provider read from line 1, interactive sources,
    active threads found in sessions/), and what a DB-only listing (`useStateDbOnly`) misses of it."""
    hidden: Dict[str, List[str]] = {k: [] for k in HIDE_REASONS}
    visible: List[str] = []
    rows_by_id = {r.id.lower(): r for r in inputs.rows}
    candidates: List[tuple] = [(r.id, r) for r in inputs.rows]
    for tid, files in inputs.index.by_thread.items():
        if tid not in rows_by_id and any(not f.archived and not f.compressed for f in files):
            candidates.append((tid, None))
    for tid, row in sorted(candidates, key=lambda c: c[0]):
        if row is not None and row.archived:
            hidden["archived"].append(tid)
            continue
        files = [f for f in inputs.index.by_thread.get(tid.lower(), [])
                 if not f.archived and not f.compressed]
        rf = files[0] if files else None
        if rf is None:
            hidden["missing_rollout_file"].append(tid)
            continue
        meta = inputs.meta_for(rf)
        line1_provider = meta.model_provider if (meta.error is None and meta.has_provider) else None
        effective = line1_provider or (row.model_provider if row is not None and meta.error else provider)
        if effective != provider:
            hidden["other_provider"].append(tid)
            continue
        if _source_kind(meta, row) not in INTERACTIVE_SOURCES:
            hidden["non_interactive_source"].append(tid)
            continue
        thread_cwd = row.cwd if row is not None else (meta.cwd or "")
        if cwd is not None and thread_cwd != cwd:
            hidden["cwd"].append(tid)
            continue
        visible.append(tid)
    db_only = _db_only_misses(inputs, visible, rows_by_id, provider)
    providers_in_use = sorted({r.model_provider for r in inputs.rows if r.model_provider})
    cfg = inputs.home.config
    return {
        "provider": provider,
        "cwd": cwd,
        "visible": len(visible),
        "visible_sample": _sample(visible, max_samples),
        "hidden": {k: len(v) for k, v in hidden.items()},
        "hidden_sample": {k: _sample(v, max_samples) for k, v in hidden.items() if v},
        "hidden_total": sum(len(v) for v in hidden.values()),
        "visible_db_only": len(visible) - sum(len(v) for v in db_only.values()),
        "db_only_hidden": {k: len(v) for k, v in db_only.items()},
        "db_only_hidden_sample": {k: _sample(v, max_samples) for k, v in db_only.items() if v},
        "rollout_not_indexed": len(db_only["rollout_not_indexed"]),
        "providers_without_config": [p for p in providers_in_use if not cfg.knows_provider(p)],
    }


def _db_only_misses(inputs: AuditInputs, visible: List[str], rows_by_id: Dict[str, ThreadRow],
                    provider: str) -> Dict[str, List[str]]:
    """Threads the default listing shows but a listing from the DB alone does not, and why."""
    out: Dict[str, List[str]] = {k: [] for k in DB_ONLY_REASONS}
    for tid in visible:
        row = rows_by_id.get(tid.lower())
        if row is None:
            out["rollout_not_indexed"].append(tid)
        elif not (row.rollout_path in inputs.index.by_path or _exists(row.rollout_path)):
            out["stale_rollout_path"].append(tid)
        elif row.preview is not None and not row.preview.strip():
            out["empty_preview"].append(tid)
        elif row.model_provider != provider:
            out["db_provider_differs"].append(tid)
    return out


def orphans(inputs: AuditInputs, max_samples: int, now: Optional[float] = None) -> Dict[str, Any]:
    """Rollouts with no row: ACTIVE_ORPHAN (in use) or importable."""
    now = time.time() if now is None else now
    row_ids = {r.id.lower() for r in inputs.rows}
    live = {t.lower() for t in inputs.activity.live_threads}
    active: List[Dict[str, str]] = []
    importable: List[Dict[str, str]] = []
    own = (inputs.activity.agent_thread_id or "").lower()
    for rf in inputs.index.files:
        if rf.thread_id in row_ids or rf.thread_id == own:
            continue
        reason = classify_orphan(rf, live, now)
        entry = {"thread_id": rf.thread_id, "path": safe_str(rf.path), "reason": reason}
        (active if reason != "importable" else importable).append(entry)
    return {
        "count": len(active) + len(importable),
        "active_orphans": len(active),
        "importable": len(importable),
        "active_orphan_sample": active[:max_samples],
        "importable_sample": importable[:max_samples],
    }


def classify_orphan(rf: RolloutFile, live_threads: set, now: float) -> str:
    if rf.thread_id in live_threads:
        return "ACTIVE_ORPHAN: its thread-writer lock is held"
    if rf.is_symlink:
        return "ACTIVE_ORPHAN: a symlink, left alone"
    try:
        age = now - os.stat(rf.path).st_mtime
    except OSError:
        return "ACTIVE_ORPHAN: cannot stat the file"
    if age < ACTIVE_WINDOW_S:
        return f"ACTIVE_ORPHAN: modified {int(age)} s ago"
    if rf.compressed:
        return "ACTIVE_ORPHAN: compressed (.zst), left alone"
    return "importable"


def counts(rows: List[ThreadRow], index: RolloutIndex) -> Dict[str, int]:
    active = sum(1 for r in rows if not r.archived)
    return {
        "sessions_rollouts": len(index.active),
        "archived_rollouts": len(index.archived),
        "rollouts_total": len(index.files),
        "threads_total": len(rows),
        "threads_active": active,
        "threads_archived": len(rows) - active,
    }


def distributions(rows: List[ThreadRow], top: int) -> Dict[str, Dict[str, int]]:
    def top_n(counter: Counter, n: Optional[int] = None) -> Dict[str, int]:
        return {safe_str(k): v for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n]}
    return {
        "model_provider": top_n(Counter(r.model_provider for r in rows)),
        "cwd": top_n(Counter(r.cwd for r in rows), top),
        "source": top_n(Counter(r.source_kind for r in rows)),
    }


def other_db_summary(db: StateDb) -> Dict[str, Any]:
    entry: Dict[str, Any] = {"path": safe_str(db.path), "reason": db.reason}
    try:
        rows = load_threads(db.path)
    except UserError as exc:
        entry["error"] = str(exc)
        return entry
    active = sum(1 for r in rows if not r.archived)
    entry["counts"] = {"threads_total": len(rows), "threads_active": active,
                       "threads_archived": len(rows) - active}
    return entry


def live_session(inputs: AuditInputs) -> Optional[Dict[str, Any]]:
    """The agent running this script: its own thread, live, expected, never a finding."""
    tid = inputs.activity.agent_thread_id
    if not tid:
        return None
    files = inputs.index.by_thread.get(tid.lower(), [])
    return {"thread_id": tid, "has_row": any(r.id.lower() == tid.lower() for r in inputs.rows),
            "rollout": safe_str(files[0].path) if files else None,
            "writer_lock_held": tid in inputs.activity.live_threads}


def activity_report(activity: CodexActivity) -> Dict[str, Any]:
    return {
        "running": activity.running,
        "agent_thread_id": activity.agent_thread_id,
        "holders": [h.describe() for h in activity.others],
        "own": [h.describe() for h in activity.holders if h.own],
        "live_threads": sorted(activity.live_threads),
    }


def build_report(inputs: AuditInputs, provider: Optional[str] = None, cwd: Optional[str] = None,
                 max_samples: int = 10) -> Dict[str, Any]:
    home = inputs.home
    cfg = home.config
    current = provider or cfg.model_provider
    report: Dict[str, Any] = {
        "codex_dir": safe_str(home.root),
        "state_db": {"path": safe_str(home.state_db.path), "reason": home.state_db.reason},
        "other_state_dbs": [other_db_summary(d) for d in home.other_dbs],
        "config": {
            "path": safe_str(cfg.path), "exists": cfg.exists, "model_provider": cfg.model_provider,
            "provider_source": cfg.provider_source, "profile": cfg.profile,
            "model_providers": cfg.providers,
        },
        "codex_running": activity_report(inputs.activity),
        "live_current_session": live_session(inputs),
        "counts": counts(inputs.rows, inputs.index),
        "distribution": distributions(inputs.rows, max(max_samples, 10)),
        "integrity": integrity(inputs, max_samples),
        "visibility": visibility(inputs, current, cwd, max_samples),
        "orphans": orphans(inputs, max_samples),
    }
    report["visibility"]["provider_source"] = "--provider" if provider else cfg.provider_source
    report["findings"] = findings(report)
    return report


def findings(report: Dict[str, Any]) -> List[str]:
    """One line for every problem, in the order a user should look at them."""
    out: List[str] = []
    integ, vis = report["integrity"], report["visibility"]
    if report["codex_running"]["running"]:
        out.append("Codex is running against this home: " + "; ".join(report["codex_running"]["holders"]))
    labels = {
        "disk_not_in_db": "rollout(s) have no DB row",
        "db_not_on_disk": "DB row(s) have no rollout file anywhere",
        "missing_rollout_path": "DB row(s) point at a rollout_path that does not exist",
        "duplicate_rollout_id": "thread id(s) have more than one rollout file",
        "archive_mismatches": "row(s) disagree with the folder their file is in (archived flag)",
        "duplicate_db_paths": "rollout_path value(s) shared by more than one row",
        "malformed_file_names": "rollout file name(s) Codex cannot parse",
        "session_meta_id_mismatch": "row(s) point at a file whose session_meta.id is another thread",
        "rollout_path_outside_home": "row(s) have a rollout_path outside this Codex home",
        "provider_mismatch": "row(s) hold a provider that differs from line 1 of their rollout",
        "line1_unreadable": "rollout(s) have an unreadable line 1",
        "compressed_rollouts": "zstd-compressed rollout(s) (reported, never touched)",
        "unreadable_paths": "folder(s) under sessions/ that could not be read or are symlinks (not followed)",
    }
    for key, label in labels.items():
        n = integ[f"{key}_count"]
        if n:
            out.append(f"{n} {label}")
    if integ.get("moved_home"):
        m = integ["moved_home"]
        out.append(f"home moved: {m['rows']} row(s) under {m['old_prefix']}; "
                   f"preview the fix: {report_command(report, 'session_repair.py', *m['remap_arg'].split(' ', 1))}")
    for reason, n in vis["hidden"].items():
        if n and reason != "cwd":
            out.append(f"{n} thread(s) hidden from the default list: {reason.replace('_', ' ')}")
    for reason, n in vis["db_only_hidden"].items():
        if n:
            out.append(f"{n} listed thread(s) missing from a DB-only list: {reason.replace('_', ' ')}")
    if vis["providers_without_config"]:
        out.append("provider id(s) with no [model_providers] entry (resume fails): "
                   + ", ".join(vis["providers_without_config"]))
    orph = report["orphans"]
    if orph["count"]:
        out.append(f"{orph['count']} orphan rollout(s): {orph['importable']} importable, "
                   f"{orph['active_orphans']} ACTIVE_ORPHAN")
    return out
