"""Plan and apply a provider migration that real Codex 0.169 keeps: DB row and line 1 together."""
from __future__ import annotations

import csv
import io
import os
import shutil
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from .artifacts import Journal, durable, fault_point, private_file
from .locks import explain_live
from .snapshot import AuditInputs
from .history_offsets import history_db_path, read_offsets, set_offsets, shifted, threads_with_offsets
from .rollout_index import not_unicode, unusable_reason
from .line1 import Line1Edit, apply_edit, plan_field_edit, seal
from .progress import Progress
from .reasoning import count_encrypted
from .paths import is_inside, safe_str
from .statedb import open_readonly, transaction, unbindable
from .writerun import write_run


@dataclass
class ProviderChange:
    thread_id: str
    old_provider: str  # the DB row's value
    path: Optional[Path]
    edit: Optional[Line1Edit]  # None: the DB row only
    db_change: bool
    mtime_ns: int = 0
    offsets: Optional[Tuple[list, int]] = None  # set when line 1 grows on a paginated thread


@dataclass
class MigrationPlan:
    target: str
    target_source: str
    target_known: bool
    db_only: bool
    changes: List[ProviderChange] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    distribution_before: Dict[str, int] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)


def _active_distribution(rows: Sequence[Any], include_archived: bool) -> Dict[str, int]:
    c = Counter(r.model_provider for r in rows if include_archived or not r.archived)
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def plan_migration(inputs: AuditInputs, target: Optional[str] = None,
                   from_providers: Sequence[str] = (), thread_ids: Sequence[str] = (),
                   include_archived: bool = False, db_only: bool = False) -> MigrationPlan:
    """Which threads change, how, and which are skipped and why; reads nothing more than gather did."""
    cfg = inputs.home.config
    plan = MigrationPlan(target=target or cfg.model_provider,
                         target_source="--target-provider" if target else cfg.provider_source,
                         target_known=cfg.knows_provider(target or cfg.model_provider), db_only=db_only)
    if not plan.target_known:
        plan.warnings.append(f"provider {plan.target!r} has no [model_providers.{plan.target}] entry in "
                             f"config.toml and is not built in: resuming these threads will fail")
    if db_only:
        plan.warnings.append("--db-only changes only the DB rows; Codex 0.169 re-reads line 1 of each "
                             "rollout on the next default listing, hides the threads again and writes "
                             "the old provider back")
    plan.distribution_before = _active_distribution(inputs.rows, include_archived)
    wanted = {t.lower() for t in thread_ids}
    froms = set(from_providers)
    live = {t.lower() for t in inputs.activity.live_threads}
    root = inputs.home.root
    forked_parents = set()
    for rf in inputs.index.files:
        meta = inputs.meta_for(rf)
        if meta.forked_from_id:
            forked_parents.add(meta.forked_from_id.lower())
    hist_threads: Set[str] = set()
    hist_conn: Optional[sqlite3.Connection] = None
    hist_path = history_db_path(inputs.home.state_db.path)
    if hist_path.is_file() and not db_only:
        hist_conn = open_readonly(hist_path)
        try:
            hist_threads = threads_with_offsets(hist_conn)
        except sqlite3.DatabaseError:
            hist_threads = set()
    try:
        for row in sorted(inputs.rows, key=lambda r: r.id):
            tid = row.id.lower()
            if wanted and tid not in wanted:
                continue
            if row.archived and not include_archived:
                continue
            if froms and row.model_provider not in froms:
                continue
            rf = inputs.index.by_path.get(row.rollout_path)
            meta = inputs.meta_for(rf) if rf else None
            line1_provider = meta.model_provider if (meta and meta.error is None and meta.has_provider) else None
            if row.model_provider == plan.target and (db_only or line1_provider in (None, plan.target)):
                continue
            if tid in live:
                plan.skipped.append((row.id, explain_live("live thread (its writer lock is held): never touched",
                                                           inputs.activity, row.id)))
                continue
            bad = unbindable((row.id, row.model_provider))
            if bad:
                plan.skipped.append((row.id, f"row left alone: it holds {bad}"))
                continue
            if db_only:
                plan.changes.append(ProviderChange(row.id, row.model_provider, None, None, True))
                continue
            if rf is None:
                why = "rollout_path is outside this Codex home" if not is_inside(Path(row.rollout_path), root) \
                    else "rollout file missing"
                plan.skipped.append((row.id, f"{why}: run session_repair.py first"))
                continue
            assert meta is not None
            problem = unusable_reason(rf, meta, tid)
            if problem is None and not_unicode(rf.key):
                problem = f"{safe_str(rf.key)} is not a valid UTF-8 path (cannot be journaled)"
            if problem:
                plan.skipped.append((row.id, problem))
                continue
            edit = None
            if meta.has_provider and line1_provider != plan.target:
                if meta.provider_span is None:
                    plan.skipped.append((row.id, "line 1 layout not recognised (no single model_provider field)"))
                    continue
                edit = plan_field_edit(meta.provider_span, "model_provider", line1_provider, plan.target)
            try:
                mtime_ns = os.stat(rf.path).st_mtime_ns
            except OSError as exc:
                plan.skipped.append((row.id, f"cannot stat the rollout ({exc.strerror or exc})"))
                continue
            change = ProviderChange(row.id, row.model_provider, rf.path, edit,
                                    db_change=row.model_provider != plan.target, mtime_ns=mtime_ns)
            if edit is not None and edit.growth:
                if tid in forked_parents:
                    plan.skipped.append((row.id, f"target id is {edit.growth} bytes longer and a fork "
                                                 "records byte offsets into this rollout"))
                    continue
                if hist_conn is not None and tid in hist_threads:
                    change.offsets = read_offsets(hist_conn, row.id)
            plan.changes.append(change)
    finally:
        if hist_conn is not None:
            hist_conn.close()
    return plan


def manifest_csv(plan: MigrationPlan, ts: str) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "old_provider", "new_provider", "ts"])
    for c in plan.changes:
        w.writerow([c.thread_id, c.old_provider, plan.target, ts])
    return buf.getvalue().encode("utf-8")


def apply_migration(inputs: AuditInputs, plan: MigrationPlan, force: bool = False,
                    progress: Optional[Progress] = None) -> Dict[str, Any]:
    """Rewrite line 1s in place, shift offsets, update rows: journaled, one transaction per DB."""
    home = inputs.home
    growth = [c for c in plan.changes if c.offsets is not None]
    hist_path = history_db_path(home.state_db.path)
    ts = datetime.now().isoformat(timespec="seconds")
    with write_run(home, "provider_migration", len(plan.changes), manifest_csv(plan, ts), force,
                   extra_dbs=[hist_path] if growth else []) as w:
        entries = []
        for c in plan.changes:  # check every planned edit against the files before any write
            if c.edit is None or c.path is None:
                continue
            seal(c.path, c.edit, "model_provider", plan.target)
            entry = {"thread_id": c.thread_id, "path": str(c.path), "mtime_ns": c.mtime_ns, **c.edit.to_record()}
            if c.edit.growth:  # the rest of the file moves: keep a whole copy first
                copy = w.run.path / f"{c.thread_id}.rollout.bak"
                private_file(copy)
                shutil.copyfile(str(c.path), str(copy))
                entry["backup"] = str(copy)
            entries.append(entry)
        w.journal.write({"op": "line1", "entries": entries})
        progress = progress or Progress(None)
        progress.phase("rewriting line 1")
        for n, c in enumerate(plan.changes, 1):
            if c.edit is not None and c.path is not None:
                apply_edit(c.path, c.edit, c.mtime_ns)
                fault_point("line 1 rewritten")
            progress.tick("rewriting line 1", n, len(plan.changes))
        progress.done()
        durable()
        if growth:
            _shift_offsets(hist_path, growth, w.journal)
        rows = [c for c in plan.changes if c.db_change]
        w.journal.write({"op": "rows", "db": str(home.state_db.path), "changes": [
            {"id": c.thread_id, "old": {"model_provider": c.old_provider},
             "new": {"model_provider": plan.target}} for c in rows]})
        with transaction(home.state_db.path) as conn:
            updated = sum(conn.execute("UPDATE threads SET model_provider=? WHERE id=? AND model_provider=?",
                                       (plan.target, c.thread_id, c.old_provider)).rowcount for c in rows)
        w.journal.write({"op": "commit", "db": str(home.state_db.path), "updated": updated})
    return {"run_dir": str(w.run.path), "db_backup": str(w.backups[home.state_db.path.name]),
            "history_backup": str(w.backups[hist_path.name]) if growth else None,
            "manifest_csv": str(w.manifest), "journal": str(w.run.journal_path),
            "line1_rewritten": len(entries), "updated_rows": updated,
            "provider_distribution_after": provider_counts(home.state_db.path),
            "rollback": f"python3 scripts/rollback.py --codex-dir {safe_str(home.root)} --manifest {w.manifest} --apply"}


def provider_counts(db: Path) -> Dict[str, int]:
    """Rows per provider, counted by SQLite: no second copy of every row in memory."""
    conn = open_readonly(db)
    try:
        rows = conn.execute("SELECT model_provider, count(*) FROM threads GROUP BY 1 ORDER BY 2 DESC, 1").fetchall()
    finally:
        conn.close()
    return {str(p): int(n) for p, n in rows}


def _shift_offsets(hist_path: Path, changes: List[ProviderChange], journal: Journal) -> None:
    entries = []
    for c in changes:
        assert c.edit is not None and c.offsets is not None
        turns, proj = c.offsets
        boundary = c.edit.old_len + 1
        new_turns = [(t, shifted(o, boundary, c.edit.growth), shifted(e, boundary, c.edit.growth))
                     for t, o, e in turns]
        new_proj = shifted(proj, boundary, c.edit.growth) if proj >= 0 else proj
        entries.append({"thread_id": c.thread_id, "boundary": boundary, "delta": c.edit.growth,
                        "old": [turns, proj], "new": [new_turns, new_proj]})
    journal.write({"op": "offsets", "db": str(hist_path), "entries": entries})
    with transaction(hist_path) as conn:
        for e in entries:
            set_offsets(conn, e["thread_id"], *e["new"])
    journal.write({"op": "commit", "db": str(hist_path)})


def plan_report(plan: MigrationPlan, sample: int) -> Dict[str, Any]:
    encrypted, unread = count_encrypted((c.thread_id, c.path) for c in plan.changes)
    warnings = list(plan.warnings)
    if encrypted:
        warnings.append(f"{len(encrypted)} of the {len(plan.changes)} thread(s) carry encrypted reasoning from "
                        "their old provider or login: they will list and read, but continuing one may fail "
                        "with invalid_encrypted_content (no storage change fixes that)")
    return {
        "encrypted_reasoning": {"threads": len(encrypted), "sample": encrypted[:sample],
                                "unreadable": len(unread)},
        "target_provider": plan.target,
        "target_source": plan.target_source,
        "target_configured": plan.target_known,
        "db_only": plan.db_only,
        "candidates": len(plan.changes),
        "line1_rewrites": sum(1 for c in plan.changes if c.edit is not None),
        "line1_growing": sum(1 for c in plan.changes if c.edit is not None and c.edit.growth),
        "row_updates": sum(1 for c in plan.changes if c.db_change),
        "skipped": len(plan.skipped),
        "skipped_sample": [{"thread_id": t, "reason": r} for t, r in plan.skipped[:sample]],
        "provider_distribution_before": plan.distribution_before,
        "sample": [{"thread_id": c.thread_id, "old_provider": c.old_provider, "new_provider": plan.target,
                    "line1": "rewrite" + (f" (+{c.edit.growth} bytes)" if c.edit.growth else " (same length)")
                    if c.edit else "unchanged", "path": safe_str(c.path) if c.path else None}
                   for c in plan.changes[:sample]],
        "warnings": warnings,
    }
