"""Build the read-only audit report: counts, integrity, visibility, orphans, running Codex."""
from __future__ import annotations

import os
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional

from sessionkit.codexfiles.ids import norm_id
from sessionkit import UserError
from sessionkit.codexfiles.home import StateDb
from sessionkit.codexfiles.versions import STATE_DB_NAME
from sessionkit.codexfiles.locks import CodexActivity
from sessionkit.codexfiles.paths import safe_str
from sessionkit.codexfiles.rollout_index import RolloutFile, RolloutIndex
from sessionkit.codexfiles.thread_files import file_for_row, is_duplicate, thread_file
from sessionkit.diagnose.snapshot import AuditInputs, gather  # noqa: F401  (gather: the audit's entry point, re-exported)
from sessionkit.codexfiles.history_offsets import history_db_path, threads_with_offsets
from sessionkit.codexfiles.statedb import ThreadRow, load_threads, open_readonly
from sessionkit.diagnose.surfaces import HIDE_REASONS, INTERACTIVE_SOURCES, Judged, cwd_folders, daemon_package, \
    db_only_ids, judge_all, line1_fields, moved_home, surface_views, tui_default_cwd, view  # noqa: F401
# HIDE_REASONS, INTERACTIVE_SOURCES and gather are re-exported: callers imported them from here
from sessionkit.diagnose import history_check
from sessionkit.codexfiles.projects import load_projects, missing_roots

ACTIVE_WINDOW_S = 300  # an unindexed rollout written this recently may still be in use
DB_ONLY_REASONS = ("rollout_not_indexed", "stale_rollout_path", "empty_preview", "db_provider_differs",
                   "db_cwd_differs", "db_archived")
INTEGRITY_KEYS = (
    "disk_not_in_db", "db_not_on_disk", "missing_rollout_path", "duplicate_rollout_id",
    "missing_active_rows", "missing_archived_rows", "stale_rows", "archive_mismatches",
    "duplicate_db_paths", "malformed_file_names", "session_meta_id_mismatch",
    "rollout_path_outside_home", "provider_mismatch", "line1_unreadable", "compressed_rollouts",
    "unreadable_paths",
)


def projects_section(db: Path, max_samples: int) -> Dict[str, Any]:
    """The audit's integrity counts for projects (read-only)."""
    projects = load_projects(db)
    lost = missing_roots(projects)
    return {"projects_total": len(projects), "projects_missing_roots_count": len(lost),
            "projects_missing_roots_sample": lost[:max_samples]}


def _sample(items: List[str], n: int) -> List[str]:
    return [safe_str(i) for i in items[:n]]


def _file_for_row(row: ThreadRow, inputs: AuditInputs) -> Optional[RolloutFile]:
    """The rollout Codex would read for a row: its recorded path if indexed, else the only one by id."""
    rf = inputs.index.by_path.get(row.rollout_path)
    return rf if rf is not None else thread_file(inputs.index.by_thread.get(row.key, []))


def integrity(inputs: AuditInputs, max_samples: int, judged: Optional[List[Judged]] = None) -> Dict[str, Any]:
    rows, index = inputs.rows, inputs.index
    found: Dict[str, List[str]] = {k: [] for k in INTEGRITY_KEYS}
    row_ids = inputs.rows_by_id
    row_paths = {r.rollout_path for r in rows}
    own = inputs.own_thread
    metas, by_path, by_thread = inputs.metas, index.by_path, index.by_thread
    for rf in index.files:  # as `codex doctor` counts them: files no row points at by path
        if rf.row_path not in row_paths and rf.thread_id != own:
            found["missing_archived_rows" if rf.archived else "missing_active_rows"].append(rf.key)
        if rf.compressed:
            found["compressed_rollouts"].append(rf.key)
        error = metas[rf.key].error
        if error:
            found["line1_unreadable"].append(f"{rf.key}: {error}")
    for tid, files in by_thread.items():
        if tid not in row_ids and tid != own:
            found["disk_not_in_db"].append(tid)
        if is_duplicate(files):
            found["duplicate_rollout_id"].append(tid)
    found["disk_not_in_db"].sort()  # the few found, not every thread, are sorted
    found["duplicate_rollout_id"].sort()
    path_count = Counter(r.rollout_path for r in rows)
    found["duplicate_db_paths"] = sorted(p for p, n in path_count.items() if n > 1)
    found["rollout_path_outside_home"] = [r.id for r in inputs.outside_home]
    for r in rows:  # sorted by id (AuditInputs)
        key = r.key
        if key not in by_thread:
            found["db_not_on_disk"].append(r.id)
        exists = inputs.path_exists(r.rollout_path)
        if not exists:
            found["missing_rollout_path"].append(r.id)
            found["stale_rows"].append(r.id)
        rf = file_for_row(by_path, r.rollout_path) if exists else None
        if rf is not None and rf.archived != r.archived:
            found["archive_mismatches"].append(r.id)
        rf = rf or _file_for_row(r, inputs)
        if rf is None:
            continue
        meta = metas[rf.key]
        if meta.error is None:
            if meta.key and meta.key != key:
                found["session_meta_id_mismatch"].append(r.id)
            if meta.has_provider and meta.model_provider != r.model_provider:
                found["provider_mismatch"].append(r.id)
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
    out["moved_home"] = moved_home(inputs, judged if judged is not None else judge_all(inputs), max_samples)
    out.update(projects_section(inputs.home.state_db.path, max_samples))  # 0.171 projects whose folders are gone
    return out


def visibility(inputs: AuditInputs, provider: str, cwd: Optional[str], max_samples: int,
               judged: Optional[List[Judged]] = None) -> Dict[str, Any]:
    """What a default `thread/list` shows (current provider read from line 1, interactive sources,
    active threads whose line 1 Codex can read and that hold more than line 1), and what a DB-only
    listing (`useStateDbOnly`) shows, judged from the rows alone."""
    judged = judge_all(inputs) if judged is None else judged
    visible, hidden = view(judged, provider, cwd)
    db_only = db_only_ids(inputs, provider, cwd)
    # both name a row by its stored id and a rowless rollout by its key: one spelling per thread
    misses = _db_only_misses(inputs, visible, set(db_only), provider)
    listed = set(visible)
    extra = [t for t in db_only if t not in listed]
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
        "visible_db_only": len(db_only),
        "db_only_hidden": {k: len(v) for k, v in misses.items()},
        "db_only_hidden_sample": {k: _sample(v, max_samples) for k, v in misses.items() if v},
        "db_only_extra": len(extra),
        "db_only_extra_sample": _sample(extra, max_samples),
        "rollout_not_indexed": len(misses["rollout_not_indexed"]),
        "providers_without_config": [p for p in providers_in_use if not cfg.knows_provider(p)],
    }


def _db_only_misses(inputs: AuditInputs, visible: List[str], db_listed: set,
                    provider: str) -> Dict[str, List[str]]:
    """Threads the default listing shows but a listing from the DB alone does not, and why."""
    out: Dict[str, List[str]] = {k: [] for k in DB_ONLY_REASONS}
    for tid in visible:
        if tid in db_listed:
            continue
        row = inputs.row_for(tid)
        if row is None:
            out["rollout_not_indexed"].append(tid)
        elif row.archived:
            out["db_archived"].append(tid)
        elif not inputs.path_exists(row.rollout_path):
            out["stale_rollout_path"].append(tid)
        elif row.preview is not None and not row.preview.strip():
            out["empty_preview"].append(tid)
        elif row.model_provider != provider:
            out["db_provider_differs"].append(tid)
        else:
            out["db_cwd_differs"].append(tid)
    return out


def orphans(inputs: AuditInputs, max_samples: int, now: Optional[float] = None) -> Dict[str, Any]:
    """Rollouts with no row: ACTIVE_ORPHAN (in use) or importable."""
    now = time.time() if now is None else now
    row_ids = inputs.rows_by_id
    live = inputs.live
    active: List[Dict[str, str]] = []
    importable: List[Dict[str, str]] = []
    own = inputs.own_thread
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
    return "importable"  # a compressed one too: Codex 0.171 re-indexes it with its row naming the .zst


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


def other_db_summary(db: StateDb, inputs: Optional[AuditInputs] = None, provider: Optional[str] = None,
                     tui_cwd: Optional[str] = None, max_samples: int = 10) -> Dict[str, Any]:
    """Another state DB of this home (the desktop app's `sqlite/state_5.sqlite`): its counts and, for
    a current-schema DB, what each surface started on it would still miss (repairs write the used DB)."""
    entry: Dict[str, Any] = {"path": safe_str(db.path), "reason": db.reason}
    try:
        rows = load_threads(db.path)
    except UserError as exc:
        entry["error"] = str(exc)
        return entry
    active = sum(1 for r in rows if not r.archived)
    entry["counts"] = {"threads_total": len(rows), "threads_active": active,
                       "threads_archived": len(rows) - active}
    if inputs is None or provider is None or db.path.name != STATE_DB_NAME:
        return entry
    other = inputs.with_rows(rows)
    judged = judge_all(other)
    integ = integrity(other, max_samples, judged)
    entry["integrity"] = {k: integ[k] for k in (
        "stale_rows_count", "stale_rows_sample", "missing_active_rows_count", "missing_archived_rows_count",
        "provider_mismatch_count", "archive_mismatches_count", "rollout_path_outside_home_count")}
    entry["moved_home"] = integ["moved_home"]
    entry["surfaces"] = surface_views(other, provider, tui_cwd, max_samples, judged)
    entry["visibility"] = visibility(other, provider, None, max_samples, judged)
    entry["history"] = _history_beside(db.path, rows, max_samples)
    return entry


def _history_beside(state_db: Path, rows: List[ThreadRow], max_samples: int) -> Dict[str, Any]:
    """Paginated threads whose history is not in the `thread_history_1.sqlite` beside this DB: an
    app-server on it lists them but `thread/read` shows 0 turns until one resume there (0.171)."""
    hist = history_db_path(state_db)
    known: set = set()
    if hist.is_file():
        try:
            conn = open_readonly(hist)
            try:
                known = {norm_id(t) for t in threads_with_offsets(conn)}
            finally:
                conn.close()
        except (UserError, sqlite3.DatabaseError):
            known = set()
    missing = sorted(r.id for r in rows if r.history_mode == "paginated" and r.key not in known)
    return {"path": safe_str(hist), "exists": hist.is_file(), "paginated_without_history": len(missing),
            "paginated_without_history_sample": _sample(missing, max_samples)}


def live_session(inputs: AuditInputs) -> Optional[Dict[str, Any]]:
    """The agent running this script: its own thread, live, expected, never a finding."""
    tid = inputs.activity.agent_thread_id
    if not tid:
        return None
    files = inputs.index.by_thread.get(tid, [])  # normalised by the lock scan
    return {"thread_id": tid, "has_row": inputs.row_for(tid) is not None,
            "rollout": safe_str(files[0].path) if files else None,
            "writer_lock_held": tid in inputs.activity.live_threads}


def activity_report(activity: CodexActivity) -> Dict[str, Any]:
    return {
        "running": activity.running,
        "agent_thread_id": activity.agent_thread_id,
        "holders": [h.describe() for h in activity.others],
        "own": [h.describe() for h in activity.holders if h.own],
        "live_threads": sorted(activity.live_threads),
        "not_writing": [h.describe() for h in activity.bystanders],
        "daemon_stop": activity.daemon_stop,
    }


def _here() -> Optional[str]:
    try:
        return os.getcwd()
    except OSError:
        return None


_CHECKED: List[Any] = []  # (inputs, its HistoryCheck): the audit's advice plans on the same check


def checked_history(inputs: AuditInputs) -> Any:
    """The history check of these inputs, made once per audit (the advice's repair plan reuses it)."""
    if _CHECKED and _CHECKED[0][0] is inputs:
        return _CHECKED[0][1]
    check = history_check.check_history(inputs)
    _CHECKED[:] = [(inputs, check)]
    return check


def build_report(inputs: AuditInputs, provider: Optional[str] = None, cwd: Optional[str] = None,
                 max_samples: int = 10, here: Optional[str] = None) -> Dict[str, Any]:
    """The whole audit; `cwd` (--cwd) filters the editors' list too, `here` (default: the current
    folder) is the TUI picker's folder when sessions were recorded there."""
    home = inputs.home
    cfg = home.config
    current = provider or cfg.model_provider
    judged = judge_all(inputs)
    integ = integrity(inputs, max_samples, judged)
    integ.update(history_check.integrity_report(checked_history(inputs), max_samples))
    tui_cwd, tui_why = tui_default_cwd(inputs, cwd, here if here is not None else _here(), integ["moved_home"])
    report: Dict[str, Any] = {
        "codex_dir": safe_str(home.root),
        "state_db": {"path": safe_str(home.state_db.path), "reason": home.state_db.reason},
        "other_state_dbs": [other_db_summary(d, inputs, current, tui_cwd, max_samples) for d in home.other_dbs],
        "config": {
            "path": safe_str(cfg.path), "exists": cfg.exists, "model_provider": cfg.model_provider,
            "provider_source": cfg.provider_source, "profile": cfg.profile,
            "model_providers": cfg.providers, "legacy_profile": cfg.legacy_profile,
            "profile_provider": cfg.profile_provider, "legacy_profile_finding": cfg.legacy_profile_finding,
        },
        "codex_running": activity_report(inputs.activity),
        "live_current_session": live_session(inputs),
        "counts": counts(inputs.rows, inputs.index),
        "distribution": distributions(inputs.rows, max(max_samples, 10)),
        "integrity": integ,
        "visibility": visibility(inputs, current, cwd, max_samples, judged),
        "orphans": orphans(inputs, max_samples),
        "surfaces": surface_views(inputs, current, tui_cwd, max_samples, judged),
        "cwd_folders": cwd_folders(judged, max_samples),
        "daemon_package": daemon_package(inputs, integ["moved_home"]),
        "line1_fields": line1_fields(inputs),
    }
    report["surfaces"]["tui_cwd_source"] = tui_why
    report["visibility"]["provider_source"] = "--provider" if provider else cfg.provider_source
    report["findings"] = findings(report)
    return report


def findings(report: Dict[str, Any]) -> List[str]:
    """One line for every problem, in the order a user should look at them."""
    out: List[str] = []
    integ, vis = report["integrity"], report["visibility"]
    if report["codex_running"]["running"]:
        out.append("Codex is running against this home: " + "; ".join(report["codex_running"]["holders"]))
    if report["config"].get("legacy_profile_finding"):
        out.append(report["config"]["legacy_profile_finding"])
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
        "projects_missing_roots": "project(s) with folders (roots) that do not exist: the desktop app groups and "
                                  "starts threads there (session_repair.py --remap-prefix moves them)",
        "unreadable_paths": "folder(s) under sessions/ that could not be read or are symlinks (not followed)",
    }
    for key, label in labels.items():
        n = integ[f"{key}_count"]
        if n:
            out.append(f"{n} {label}")
    out += history_check.history_findings(integ)
    if integ.get("moved_home"):
        m = integ["moved_home"]
        cwd = f" and {m['cwd_rows']} session(s) recorded in folders under {m['old_user_prefix']}" \
            if m.get("cwd_rows") else ""
        # no command here: next_steps (fixes/advice.py) names one only when its dry-run would change something
        out.append(f"home moved: {m['rows']} row(s) under {m['old_prefix']}{cwd}")
    pkg = report.get("daemon_package")
    if pkg and pkg.get("problem"):
        to = f"; re-point it to {pkg['repoint_to']}" if pkg.get("repoint_to") else ""
        out.append(f"{pkg['path']} -> {pkg['target']} {pkg['problem']}{to}")
    for reason, n in vis["hidden"].items():
        if n and reason not in ("cwd", "cwd_folder_gone"):
            out.append(f"{n} thread(s) hidden from the default list: {reason.replace('_', ' ')}")
    tui = report["surfaces"].get("tui")
    if tui is not None:
        gone = tui["hidden"].get("cwd_folder_gone", 0)
        if gone and not tui["visible"]:
            out.append(f"the TUI picker in {tui['cwd']} shows no session: {gone} were recorded in folders "
                       f"that no longer exist")
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

