"""Plan and apply a provider migration that real Codex 0.169 keeps: DB row and line 1 together."""
from __future__ import annotations

import io
import os
import sqlite3
from collections import Counter
from sessionkit.codexfiles.record import Record
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from sessionkit.codexfiles.reasons import FILE_MISSING, LIVE_GROUP, LIVE_UNTOUCHED, OUTSIDE_HOME
from sessionkit.codexfiles.ids import norm_id
from sessionkit.codexfiles.locks import explain_live
from sessionkit.diagnose.snapshot import AuditInputs
from sessionkit.codexfiles.history_offsets import history_db_path, read_offsets, threads_with_offsets
from sessionkit.codexfiles.rollout_index import LINKED_ROOT, not_unicode, unusable_reason
from sessionkit.codexfiles.rollout_edit import LineEdit, plan_fields
from sessionkit.runlog.ops import Line1Rewrite, OffsetShift, Op, RolloutEdit, RolloutRewrite, RowUpdate
from sessionkit.codexfiles.thread_graph import SubAgents, ThreadGraph, graph_of, members, sub_agents_of
from sessionkit.fixes.forks import fork_rewrites, join_groups, left_behind, live_groups, with_sub_agents
from sessionkit.ui.progress import Progress
from sessionkit.codexfiles.reasoning import MARKER as ENCRYPTED, count_encrypted
from sessionkit.codexfiles.paths import is_inside, read_regular_stat, safe_str
from sessionkit.codexfiles.statedb import open_readonly, unbindable
from sessionkit.fixes.compressed import decompress_first
from sessionkit.codexfiles.zstd import compressed_count, line1_of


class ProviderChange(Record):

    __slots__ = ("thread_id", "old_provider", "path", "edit", "db_change", "mtime_ns", "offsets", "key")

    def __init__(self, thread_id: str, old_provider: str, path: Optional[Path], edit: Optional[LineEdit],
                 db_change: bool, mtime_ns: int = 0, offsets: Optional[Tuple[list, int]] = None, key: str = "") -> None:
        self.thread_id = thread_id
        self.old_provider = old_provider  # the DB row's value
        self.path = path
        self.edit = edit  # None: the DB row only
        self.db_change = db_change
        self.mtime_ns = mtime_ns
        self.offsets = offsets  # set when line 1 grows on a paginated thread
        self.key = key  # the thread's normalised id (ThreadRow.key); thread_id is the row's stored id


class MigrationPlan(Record):
    # thread id -> whether its rollout carries encrypted reasoning, known from the plan's own read of
    # it (the whole file, or a hit in what was read): plan_report reads only the others

    __slots__ = ("target", "target_source", "target_known", "db_only", "changes", "skipped", "distribution_before",
                 "warnings", "others", "graph", "forks_moved", "subs", "encrypted")

    def __init__(self, target: str, target_source: str, target_known: bool, db_only: bool,
                 changes: Optional[List[ProviderChange]] = None, skipped: Optional[List[Tuple[str, str]]] = None,
                 distribution_before: Optional[Dict[str, int]] = None, warnings: Optional[List[str]] = None,
                 others: Optional[List['OtherDbChanges']] = None, graph: Optional[ThreadGraph] = None,
                 forks_moved: int = 0, subs: Optional[SubAgents] = None,
                 encrypted: Optional[Dict[str, bool]] = None) -> None:
        self.target = target
        self.target_source = target_source
        self.target_known = target_known
        self.db_only = db_only
        self.changes = [] if changes is None else changes
        self.skipped = [] if skipped is None else skipped
        self.distribution_before = {} if distribution_before is None else distribution_before
        self.warnings = [] if warnings is None else warnings
        self.others = [] if others is None else others  # every other state DB of the home
        self.graph = graph  # forks into the changed rollouts
        self.forks_moved = forks_moved  # forks whose history_base moves with a growing parent
        self.subs = SubAgents() if subs is None else subs  # sub-agents go with their parents
        self.encrypted = {} if encrypted is None else encrypted

    def __repr__(self) -> str:  # as the dataclass did: graph, subs, encrypted left out
        shown = ("target", "target_source", "target_known", "db_only", "changes", "skipped", "distribution_before",
                 "warnings", "others", "forks_moved")
        return "MigrationPlan(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in shown) + ")"


class OtherDbChanges(Record):
    """Another state DB indexing this home's rollouts (the desktop app's <home>/sqlite/state_5.sqlite):
    its rows of the migrated threads, each with the provider it holds now."""
    __slots__ = ("db", "providers")

    def __init__(self, db: Path, providers: Optional[Dict[str, str]] = None) -> None:
        self.db = db
        self.providers = {} if providers is None else providers  # thread id -> its provider there


def _active_distribution(rows: Sequence[Any], include_archived: bool) -> Dict[str, int]:
    c = Counter(r.model_provider for r in rows if include_archived or not r.archived)
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def refuse_unknown_target(inputs: AuditInputs, target: Optional[str], force: bool) -> None:
    """An --apply to a --target-provider config.toml does not define, Codex does not build in and no
    session here uses (a typo: `opneai`) would hide every moved session: refused unless --force."""
    config = inputs.home.config
    if not target or force or config.knows_provider(target) or any(r.model_provider == target for r in inputs.rows):
        return
    from sessionkit import UserError
    from sessionkit.codexfiles.home import BUILTIN_PROVIDERS
    defined = ", ".join(config.providers) or "none"
    raise UserError(f"refusing: --target-provider {safe_str(target)!r} is neither a provider config.toml defines "
                    f"({defined}) nor a Codex built-in ({', '.join(BUILTIN_PROVIDERS)}) nor one a session here has; "
                    f"Codex could not resume the sessions moved to it. Nothing was changed; fix the name, or pass --force")


def provider_edit(path: str, old: Optional[str], new: str) -> LineEdit:
    """Line 1's model_provider swapped, as the one editor plans it (the write checks it again)."""
    line, err = line1_of(path)  # a compressed rollout is read decompressed
    if line is None:
        return LineEdit(problem=f"line 1 unreadable ({err})")
    return plan_fields(line, {"model_provider": (old, new)})


WHOLE = 1024 * 1024  # a rollout up to this size is read whole by the plan (line 1 and the encrypted-reasoning scan)
HEAD = 64 * 1024  # else its first bytes


def _read_head(path: str) -> Optional[Tuple[bytes, os.stat_result]]:
    """The start of a plain rollout (all of it up to WHOLE) and its fstat, in one open; None when
    it is not a regular file or cannot be read (the plan's usual reads say why then)."""
    try:
        return read_regular_stat(path, HEAD, whole_below=WHOLE)
    except OSError:
        return None


def _edit_from_head(plan: MigrationPlan, tid: str, path: str, old: Optional[str], new: str
                    ) -> Optional[Tuple[LineEdit, int]]:
    """The line-1 edit and the mtime from one read of a plain rollout, noting in the plan whether it
    carries encrypted reasoning where that read tells; None: planned the usual way."""
    got = _read_head(path)
    if got is None:
        return None
    data, st = got
    end = data.find(b"\n")
    if end < 0:
        return None  # line 1 longer than what was read (or no newline): read as usual
    whole = len(data) == st.st_size
    if ENCRYPTED in data:
        plan.encrypted[tid] = True
    elif whole:
        plan.encrypted[tid] = False
    return plan_fields(data[:end], {"model_provider": (old, new)}), st.st_mtime_ns


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
    plan.subs = sub_agents_of(inputs)
    wanted = with_sub_agents(thread_ids, plan.subs)  # a named thread brings its sub-agents
    left: Dict[str, str] = {}  # a sub-agent a filter keeps out -> the flag that would bring it
    froms = set(from_providers)
    live = set(inputs.activity.live_threads)
    root = inputs.home.root
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
            tid = row.key
            if wanted and tid not in wanted:
                continue
            if row.archived and not include_archived:
                if tid in plan.subs.parent_of:
                    left[tid] = "it is archived (add --include-archived to move it too)"
                continue
            if froms and row.model_provider not in froms:
                if tid in plan.subs.parent_of:
                    left[tid] = f"its provider {safe_str(row.model_provider)!r} is not a --from-provider"
                continue
            rf = inputs.index.by_path.get(row.rollout_path)
            meta = inputs.meta_for(rf) if rf else None
            line1_provider = meta.model_provider if (meta and meta.error is None and meta.has_provider) else None
            if row.model_provider == plan.target and (db_only or line1_provider in (None, plan.target)):
                continue
            if tid in live:
                plan.skipped.append((row.id, explain_live(LIVE_UNTOUCHED,
                                                           inputs.activity, row.id)))
                continue
            bad = unbindable((row.id, row.model_provider))
            if bad:
                plan.skipped.append((row.id, f"row left alone: it holds {bad}"))
                continue
            if db_only:
                plan.changes.append(ProviderChange(row.id, row.model_provider, None, None, True, key=row.key))
                continue
            if rf is None:
                why = OUTSIDE_HOME if not is_inside(Path(row.rollout_path), root) \
                    else FILE_MISSING
                plan.skipped.append((row.id, f"{why}: run session_repair.py first"))
                continue
            assert meta is not None
            problem = unusable_reason(rf, meta, tid) or (LINKED_ROOT if rf.linked_root else None)
            if problem is None and not_unicode(rf.key):
                problem = f"{safe_str(rf.key)} is not a valid UTF-8 path (cannot be journaled)"
            if problem:
                plan.skipped.append((row.id, problem))
                continue
            edit = None
            mtime: Optional[int] = None
            if meta.has_provider and line1_provider != plan.target:
                quick = None if rf.compressed else _edit_from_head(plan, row.id, rf.key, line1_provider, plan.target)
                if quick is not None:  # one open: line 1, the mtime, and (a small file) the reasoning scan
                    edit, mtime = quick
                else:
                    edit = provider_edit(rf.key, line1_provider, plan.target)  # read again: only the files to rewrite
                if edit.problem:
                    plan.skipped.append((row.id, edit.problem))
                    continue
            try:
                mtime_ns = os.stat(rf.path).st_mtime_ns if mtime is None else mtime
            except OSError as exc:
                plan.skipped.append((row.id, f"cannot stat the rollout ({exc.strerror or exc})"))
                continue
            change = ProviderChange(row.id, row.model_provider, Path(rf.row_path), edit,  # .jsonl: decompressed first
                                    db_change=row.model_provider != plan.target, mtime_ns=mtime_ns, key=row.key)
            if edit is not None and edit.growth:
                if hist_conn is not None and tid in hist_threads:
                    change.offsets = read_offsets(hist_conn, row.id)
            plan.changes.append(change)
    finally:
        if hist_conn is not None:
            hist_conn.close()
    _plan_group_members(plan, inputs, left)
    _plan_other_dbs(plan, inputs, include_archived, froms)
    growing = [c.path for c in plan.changes if c.edit is not None and c.edit.growth and c.path is not None]
    if growing and any(inputs.meta_for(rf).forked_from_id for rf in inputs.index.files):
        plan.graph = graph_of(inputs)  # forks' line 1 read only when a fork exists
        plan.forks_moved = len(members(plan.graph, growing))
    return plan


def _plan_group_members(plan: MigrationPlan, inputs: AuditInputs, left: Dict[str, str]) -> None:
    """A thread goes with its sub-agents: one Codex holds open keeps the whole group out (named);
    a sub-agent a filter keeps out while its parent moves is named in a warning."""
    waits = live_groups([c.key for c in plan.changes], inputs.activity.live_threads, plan.subs)
    if waits:
        shown = {c.key: c.thread_id for c in plan.changes}
        plan.changes = [c for c in plan.changes if c.key not in waits]
        plan.skipped += [(shown[t], LIVE_GROUP.format(other=safe_str(n))) for t, n in sorted(waits.items())]
    plan.warnings += left_behind([c.key for c in plan.changes if c.old_provider != plan.target
                                  or c.edit is not None], plan.subs, left)


def _plan_other_dbs(plan: MigrationPlan, inputs: AuditInputs, include_archived: bool, froms: Set[str]) -> None:
    """The same threads in every other state DB get the target provider too; rows only such a DB
    has are named in a warning (the rollout's line 1 is shared, its row there is not)."""
    from sessionkit.fixes.repair import other_state_dbs
    from sessionkit.codexfiles.statedb import load_threads
    wanted = {c.key: c for c in plan.changes}
    used = {r.key for r in inputs.rows}
    for db in other_state_dbs(inputs.home):
        other = OtherDbChanges(db)
        only_here = 0
        for row in load_threads(db):
            tid = row.key
            if tid in wanted and row.model_provider != plan.target:
                other.providers[wanted[tid].thread_id] = row.model_provider
            elif tid not in used and row.model_provider != plan.target and (include_archived or not row.archived) \
                    and (not froms or row.model_provider in froms):
                only_here += 1
        if other.providers:
            plan.others.append(other)
        if only_here:
            plan.warnings.append(f"{only_here} thread(s) of {safe_str(db)} have no row in the used DB and are not "
                                 f"migrated there: run again with --sqlite-home {safe_str(db.parent)}")


def manifest_csv(plan: MigrationPlan, ts: str) -> bytes:
    import csv  # the manifest is written only when applying
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "old_provider", "new_provider", "ts"])
    for c in plan.changes:
        w.writerow([c.thread_id, c.old_provider, plan.target, ts])
    return buf.getvalue().encode("utf-8")


def migration_ops(home_db: Path, hist_path: Path, plan: MigrationPlan, reset: Sequence[str] = ()) -> List[Op]:
    """The plan as typed operations: each thread's line 1, then offsets and rows (files before DBs),
    in the used DB and in every other state DB of the home (and their history DBs). A growing
    rollout's forks follow it (their history_base moves with it), parents before forks. `reset`:
    threads whose rows in `hist_path` the same run deletes (a history reset): nothing to shift."""
    reset_ids = {norm_id(t) for t in reset}
    hists = []
    for db in ([] if plan.db_only else [home_db] + [o.db for o in plan.others]):
        hp = hist_path if db == home_db else history_db_path(db)
        if hp.is_file():
            conn = open_readonly(hp)
            hists.append((hp, conn, threads_with_offsets(conn)))
    graph = plan.graph
    group = members(graph, [c.path for c in plan.changes if c.edit is not None and c.edit.growth
                            and c.path is not None]) if graph is not None else {}
    changes = {c.thread_id: c for c in plan.changes}
    own: Dict[str, RolloutRewrite] = {}
    rewrites: Dict[str, RolloutEdit] = {}
    for c in plan.changes:
        if c.edit is not None and c.path is not None:
            if str(c.path) in group:
                own[str(c.path)] = RolloutRewrite(c.thread_id, str(c.path), {"model_provider": plan.target}, [],
                                                  expect_mtime_ns=c.mtime_ns)
            else:
                rewrites[c.thread_id] = Line1Rewrite(c.thread_id, str(c.path), {"model_provider": plan.target},
                                                     expect_mtime_ns=c.mtime_ns, expect_growth=c.edit.growth)
    ops: List[Op] = []

    def emit(tid: str, rw: Optional[RolloutEdit]) -> None:
        if rw is not None:
            ops.append(rw)
        if rw is not None and getattr(rw, "expect_growth", None) != 0:  # same length (prepare() holds
            for hp, conn, with_offsets in hists:  # it to that): no offset moves, none read; else re-read under the lock
                if tid in with_offsets and not (hp == hist_path and norm_id(tid) in reset_ids):
                    ops.append(OffsetShift.following(str(hp), rw, read_offsets(conn, tid)))
        c = changes.get(tid)
        if c is None:
            return
        if c.db_change:
            ops.append(RowUpdate(str(home_db), "threads", {"id": c.thread_id},
                                 {"model_provider": c.old_provider}, {"model_provider": plan.target}, c.thread_id))
        for other in plan.others:
            if c.thread_id in other.providers:
                ops.append(RowUpdate(str(other.db), "threads", {"id": c.thread_id},
                                     {"model_provider": other.providers[c.thread_id]},
                                     {"model_provider": plan.target}, c.thread_id))
    try:
        for c in plan.changes:
            if c.path is not None and str(c.path) in group:
                continue  # emitted with the parent it follows
            rw = rewrites.get(c.thread_id)
            emit(c.thread_id, rw)
            if rw is not None and graph is not None and graph.forks_into(Path(rw.path)):
                for fork_rw in fork_rewrites(graph, rw, own):
                    assert fork_rw.thread_id is not None
                    emit(fork_rw.thread_id, fork_rw)
    finally:
        for _hp, conn, _w in hists:
            conn.close()
    join_groups(ops, plan.subs)  # a sub-agent's changes go with its parent's: locked, skipped, undone together
    return ops


def apply_migration(inputs: AuditInputs, plan: MigrationPlan, force: bool = False,
                    progress: Optional[Progress] = None) -> Dict[str, Any]:
    """Run the plan's ops through the one executor: journaled, writer-locked, one transaction per DB."""
    home = inputs.home
    hist_path = history_db_path(home.state_db.path)
    ts = datetime.now().isoformat(timespec="seconds")
    ops = migration_ops(home.state_db.path, hist_path, plan)
    pre = decompress_first(home, ops, force, progress)  # compressed rollouts: decompressed first, own run
    from sessionkit.runlog.writerun import execute  # the executor: loaded only to apply
    r = execute(home, "provider_migration", ops, manifest_csv(plan, ts), force, progress)
    plan.skipped.extend(r.skipped)
    hist_backup = r.backups.get(str(hist_path))
    return {"run_dir": str(r.run_dir), "db_backup": str(r.backups.get(str(home.state_db.path), "")) or None,
            "history_backup": str(hist_backup) if hist_backup else None,
            "manifest_csv": str(r.manifest), "journal": str(r.journal),
            "line1_rewritten": r.applied["line1"] + r.applied["rollout_rewrite"], "updated_rows": r.applied["row_update"],
            "rows_per_db": {safe_str(db): n for db, n in r.rows.items() if not db.endswith("thread_history_1.sqlite")},
            "skipped_at_apply": [{"thread_id": t, "reason": why} for t, why in r.skipped],
            "provider_distribution_after": provider_counts(home.state_db.path),
            "rollback": r.rollback_command(home), "decompression": pre}


def provider_counts(db: Path) -> Dict[str, int]:
    """Rows per provider, counted by SQLite: no second copy of every row in memory."""
    conn = open_readonly(db)
    try:
        rows = conn.execute("SELECT model_provider, count(*) FROM threads GROUP BY 1 ORDER BY 2 DESC, 1").fetchall()
    finally:
        conn.close()
    return {str(p): int(n) for p, n in rows}


def plan_report(plan: MigrationPlan, sample: int) -> Dict[str, Any]:
    known = plan.encrypted  # read by the plan already; the others are read now, each up to its first hit
    more, unread = count_encrypted((c.thread_id, c.path) for c in plan.changes if c.thread_id not in known)
    hit = set(more)
    encrypted = [c.thread_id for c in plan.changes if known.get(c.thread_id) or c.thread_id in hit]
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
        "forks_moved": plan.forks_moved,
        "decompress_first": compressed_count(c.path for c in plan.changes if c.edit is not None),
        "row_updates": sum(1 for c in plan.changes if c.db_change),
        "other_dbs": [{"db": safe_str(o.db), "row_updates": len(o.providers)} for o in plan.others],
        "skipped": len(plan.skipped),
        "skipped_sample": [{"thread_id": t, "reason": r} for t, r in plan.skipped[:sample]],
        "provider_distribution_before": plan.distribution_before,
        "sample": [{"thread_id": c.thread_id, "old_provider": c.old_provider, "new_provider": plan.target,
                    "line1": "rewrite" + (f" (+{c.edit.growth} bytes)" if c.edit.growth else " (same length)")
                    if c.edit else "unchanged", "path": safe_str(c.path) if c.path else None}
                   for c in plan.changes[:sample]],
        "warnings": warnings,
    }
