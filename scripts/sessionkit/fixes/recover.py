"""One recovery run: every change the audit recommends (repair, moved home, provider, unindexed
files, incomplete histories, lost names) planned on the existing planners, the provider migration
planned on the picture of the home after the repair, and applied as ONE run of the one executor:
one journal, one set of backups, one rollback."""
from __future__ import annotations

import io
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sessionkit.codexfiles.ids import norm_id
from sessionkit.diagnose.history_check import check_history
from sessionkit.codexfiles.history_offsets import history_db_path
from sessionkit.fixes.history_reset import HistoryPlan, history_ops, plan_history
from sessionkit.fixes.migrate import MigrationPlan, ProviderChange, migration_ops, plan_migration, provider_counts
from sessionkit.runlog.ops import Op
from sessionkit.codexfiles.paths import safe_str
from sessionkit.codexfiles.record import Record
from sessionkit.codexfiles.zstd import compressed_count
from sessionkit.ui.progress import Progress
from sessionkit.fixes.repair import (RepairPlan, RowChange, archived_count, other_db_ops, plan_repair, remap_ops, repair_ops,
                     thread_columns_of)
from sessionkit.diagnose.snapshot import AuditInputs
from sessionkit.codexfiles.statedb import ThreadRow

Remap = Tuple[str, str]
RUN_KIND = "session_recover"

# The causes, in the order the dry-run shows them; each session is named under its first one.
CAUSE_MOVED_HOME = "moved home"
CAUSE_MOVED_FILES = "files that moved"
CAUSE_ARCHIVED = "archived (--unarchive)"
CAUSE_PROVIDER = "another provider"
CAUSE_UNINDEXED = "unindexed files"
CAUSE_HISTORY = "incomplete histories"
CAUSE_NAMES = "lost names"
CAUSES = (CAUSE_MOVED_HOME, CAUSE_MOVED_FILES, CAUSE_UNINDEXED, CAUSE_ARCHIVED, CAUSE_PROVIDER,
          CAUSE_HISTORY, CAUSE_NAMES)


class RecoverOptions(Record):
    __slots__ = ("remaps", "remap_from", "target", "unarchive", "fix_paths", "fix_history", "import_orphans",
                 "include_archived", "thread_ids")
    remaps: List[Remap]
    remap_from: Optional[str]  # "--remap-prefix" or "the audit" (the moved home it found)
    target: Optional[str]
    unarchive: bool
    fix_paths: bool
    fix_history: bool
    import_orphans: bool
    include_archived: bool
    thread_ids: Sequence[str]

    def __init__(self, remaps: Optional[List[Remap]] = None, remap_from: Optional[str] = None,
                 target: Optional[str] = None, unarchive: bool = False, fix_paths: bool = True,
                 fix_history: bool = True, import_orphans: bool = True, include_archived: bool = False,
                 thread_ids: Sequence[str] = ()) -> None:
        self.remaps = [] if remaps is None else remaps
        self.remap_from, self.target, self.unarchive = remap_from, target, unarchive
        self.fix_paths, self.fix_history, self.import_orphans = fix_paths, fix_history, import_orphans
        self.include_archived, self.thread_ids = include_archived, thread_ids


class RecoverPlan(Record):
    __slots__ = ("inputs", "options", "repair", "history", "migration", "causes", "detail", "folded", "predicted")
    inputs: AuditInputs
    options: RecoverOptions
    repair: RepairPlan
    history: HistoryPlan
    migration: MigrationPlan
    causes: Dict[str, List[str]]  # thread id -> its causes, in CAUSES order
    detail: Dict[str, List[str]]  # thread id -> what changes, in words
    folded: List[str]  # threads whose provider goes into the remap rewrite
    predicted: List[Tuple[str, str]]  # threads the apply will refuse (hard links)

    def __init__(self, inputs: AuditInputs, options: RecoverOptions, repair: RepairPlan, history: HistoryPlan,
                 migration: MigrationPlan) -> None:
        self.inputs, self.options, self.repair, self.history, self.migration = inputs, options, repair, history, migration
        self.causes: Dict[str, List[str]] = {}
        self.detail: Dict[str, List[str]] = {}
        self.folded: List[str] = []
        self.predicted: List[Tuple[str, str]] = []

    @property
    def has_work(self) -> bool:
        r, h = self.repair, self.history
        return bool(r.moves or r.rows or r.inserts or r.others or r.rewrites or h.resets or h.names
                    or self.migration.changes)

    @property
    def skipped(self) -> List[Tuple[str, str]]:
        seen: Dict[str, str] = {}  # each thread once, with its first reason (two planners may skip it)
        for tid, why in self.repair.skipped + self.history.skipped + self.migration.skipped + self.predicted:
            seen.setdefault(tid, why)
        return list(seen.items())

    def groups(self) -> Dict[str, List[str]]:
        """Each session once, under its first cause."""
        out: Dict[str, List[str]] = {c: [] for c in CAUSES}
        for tid, causes in self.causes.items():
            out[causes[0]].append(tid)
        return {c: ids for c, ids in out.items() if ids}


def picture_after_repair(inputs: AuditInputs, repair: RepairPlan) -> AuditInputs:
    """The rows as they will be after the repair, with each moved file still where it lies now
    (the provider's line-1 edit runs before the move, on the file as it is): what the migration
    is planned on. The walk, heads and activity are shared (no second read of the home)."""
    back = {str(m.dst): str(m.src) for m in repair.moves}
    changes = {r.key: r.new for r in repair.rows}
    rows: List[ThreadRow] = []
    for row in inputs.rows:  # a moved file's row may keep its path (the move brings the file there)
        new = changes.get(row.key)
        if not new and row.rollout_path not in back:
            rows.append(row)
            continue
        new = new or {}
        path = str(new.get("rollout_path", row.rollout_path))
        rows.append(ThreadRow(row.id, back.get(path, path), bool(new.get("archived", row.archived)),
                              row.model_provider, str(new.get("cwd", row.cwd)), row.source, row.created_at,
                              new.get("updated_at", row.updated_at), new.get("archived_at", row.archived_at),
                              row.preview, row.history_mode, new.get("updated_at_ms", row.updated_at_ms)))
    for ins in repair.inserts:
        rows.append(ThreadRow(str(ins["id"]), str(ins["rollout_path"]), bool(ins.get("archived")),
                              str(ins.get("model_provider") or ""), str(ins.get("cwd") or ""),
                              str(ins.get("source") or ""), ins.get("created_at"), ins.get("updated_at"),
                              ins.get("archived_at"), ins.get("preview"), ins.get("history_mode"),
                              ins.get("updated_at_ms")))
    return AuditInputs(inputs.home, rows, inputs.index, inputs.metas, inputs.activity, heads=inputs.heads)


def plan_recover(inputs: AuditInputs, opts: RecoverOptions, now: Optional[float] = None) -> RecoverPlan:
    """Repair and history on the home as it is; the provider on the home as the repair leaves it."""
    now = time.time() if now is None else now
    history = plan_history(inputs, check_history(inputs), opts.fix_history, opts.thread_ids)
    repair = plan_repair(inputs, fix_paths=opts.fix_paths, unarchive=opts.unarchive, thread_ids=opts.thread_ids,
                         remaps=opts.remaps, import_orphans=opts.import_orphans, now=now,
                         names=history.names)  # name restores: row changes through the one skip path
    migration = plan_migration(picture_after_repair(inputs, repair), opts.target, thread_ids=opts.thread_ids,
                               include_archived=opts.include_archived)
    plan = RecoverPlan(inputs, opts, repair, history, migration)
    _remap_inserts(plan)
    _fold_provider_into_rewrites(plan)
    _one_change_per_file(plan)
    _inserts_take_the_provider(plan)
    _drop_shifts_of_reset_threads(plan)
    _causes(plan)
    predict_link_skips(plan)  # edges
    return plan


def _remap_inserts(plan: RecoverPlan) -> None:
    """A file the run indexes that was written in the moved folder gets the remap too (its row's
    cwd, line 1 and the cwd of its later lines), as the rows the repair remaps do: else it would be
    indexed under a folder that no longer exists and be missing from the project's list."""
    from sessionkit.fixes.repair import RolloutPlan
    from sessionkit.codexfiles.rollout_edit import plan_file, remap
    remaps = plan.repair.remaps
    if not remaps:
        return
    parents = {m.parent_key for rf in plan.inputs.index.files for m in [plan.inputs.meta_for(rf)] if m.parent_key}
    for ins in plan.repair.inserts:
        tid, path = str(ins["id"]), Path(str(ins["rollout_path"]))
        if isinstance(ins.get("cwd"), str):
            ins["cwd"] = remap(ins["cwd"], remaps)
        fp = plan_file(str(path), remaps, digests=False)  # the one editor: the same plan the write makes
        if fp.problem or not fp.spans:
            continue
        if fp.growth > 0 and tid in parents:  # an insert's id is the walk's key
            continue  # a fork records byte offsets into it and no fork move is planned for it: row only
        plan.repair.rewrites.append(RolloutPlan(tid, path, {}, fp.folder_lines, fp.growth > 0, key=tid))


def _fold_provider_into_rewrites(plan: RecoverPlan) -> None:
    """A thread whose rollout the remap rewrites gets its provider in that same rewrite: two edits
    of one file planned on its old bytes cannot both run. Its row update stays the migration's."""
    rewrites = {rp.key: rp for rp in plan.repair.rewrites}
    changes: List[ProviderChange] = []
    for c in plan.migration.changes:
        rp = rewrites.get(c.key)
        if rp is not None and c.edit is not None:
            rp.set["model_provider"] = plan.migration.target
            plan.folded.append(c.thread_id)
            c = ProviderChange(c.thread_id, c.old_provider, c.path, None, c.db_change, c.mtime_ns, None, key=c.key)
        changes.append(c)
    plan.migration.changes = changes


SKIP_MOVED_AND_EDITED = ("its file is unarchived (moved) in this run, and a file both moved and rewritten in one "
                         "run cannot be undone as one: its provider is moved by the next session_recover.py run")
SKIP_UNARCHIVE_LATER = ("its file's folders are remapped in this run, and a file both moved and rewritten in one "
                        "run cannot be undone as one: it stays archived; the next session_recover.py --unarchive "
                        "brings it back")
UNARCHIVE_KEYS = ("archived", "archived_at", "updated_at", "updated_at_ms")


def _one_change_per_file(plan: RecoverPlan) -> None:
    """A rollback judges every change of a run on the home as it finds it, so a file is either
    moved or rewritten in one run, never both. A file moved back to its recorded place that is also
    rewritten stays where it lies and its row points at it instead (Codex reads the row's path). A
    file to unarchive whose folders are remapped stays archived until the next run; one that only
    gets a provider is unarchived and keeps its provider until the next run. Each says so."""
    remapped = {rp.key for rp in plan.repair.rewrites}
    edited = {c.key for c in plan.migration.changes if c.edit is not None} | remapped
    if not edited:
        return
    rows = {r.key: r for r in plan.repair.rows}
    by_id = plan.inputs.rows_by_id
    keep = []
    later: List[Tuple[str, str]] = []
    for m in plan.repair.moves:
        tid = m.key
        if tid not in edited:
            keep.append(m)
            continue
        r = rows.get(tid)
        if m.why == "fix path" or tid in remapped:
            if r is None:
                r = RowChange(m.thread_id, {"rollout_path": by_id[tid].rollout_path}, {}, [], key=tid)
                plan.repair.rows.append(r)
            r.new["rollout_path"] = str(m.src)
            r.old.setdefault("rollout_path", by_id[tid].rollout_path)
            if m.why == "fix path":
                r.why.append("point rollout_path at the real file")
                continue
            for key in UNARCHIVE_KEYS:  # stays archived: the row keeps those values
                r.new.pop(key, None)
                r.old.pop(key, None)
            r.why = [w for w in r.why if w != "unarchive"]
            later.append((tid, SKIP_UNARCHIVE_LATER))
        else:
            keep.append(m)
            later.append((tid, SKIP_MOVED_AND_EDITED))
    plan.repair.moves = keep
    plan.repair.rows = [r for r in plan.repair.rows if r.new]
    gone = {t for t, why in later if why == SKIP_MOVED_AND_EDITED}
    plan.migration.changes = [c for c in plan.migration.changes if c.key not in gone]
    for tid, why in later:
        (plan.migration.skipped if why == SKIP_MOVED_AND_EDITED else plan.repair.skipped).append((by_id[tid].id, why))


def _inserts_take_the_provider(plan: RecoverPlan) -> None:
    """A row this run adds is added with the target provider (a row added and then updated in one
    run is not one change a rollback can judge); its file's line 1 still gets the provider."""
    inserts = {str(i["id"]): i for i in plan.repair.inserts}  # an insert's id is the walk's key
    for c in plan.migration.changes:
        ins = inserts.get(c.key)
        if ins is not None and c.db_change:
            ins["model_provider"] = plan.migration.target
            c.db_change = False


def _drop_shifts_of_reset_threads(plan: RecoverPlan) -> None:
    """A thread whose stored history is reset keeps no offsets to shift: its rows are deleted and
    Codex rebuilds them from the rewritten file."""
    reset = {f.thread_key for f in plan.history.resets}
    for c in plan.migration.changes:
        if c.key in reset:
            c.offsets = None


def _add(plan: RecoverPlan, tid: str, cause: str, what: str) -> None:
    causes = plan.causes.setdefault(tid, [])
    if cause not in causes:
        causes.append(cause)
        causes.sort(key=CAUSES.index)
    plan.detail.setdefault(tid, []).append(what)


def _causes(plan: RecoverPlan) -> None:
    root = plan.inputs.home.root
    moved = {m.thread_id: m for m in plan.repair.moves}
    for r in plan.repair.rows:
        if any(w.startswith("remap") for w in r.why):
            _add(plan, r.thread_id, CAUSE_MOVED_HOME, "paths remapped to " + safe_str(root if not plan.options.remaps
                                                                                     else plan.options.remaps[0][1]))
        if "unarchive" in r.why:
            _add(plan, r.thread_id, CAUSE_ARCHIVED, "brought back from the archive")
        if "point rollout_path at the real file" in r.why:
            _add(plan, r.thread_id, CAUSE_MOVED_FILES, "index pointed at its file")
    for tid, m in moved.items():
        if m.why == "fix path":
            _add(plan, tid, CAUSE_MOVED_FILES, "file moved back to its recorded place")
    added = {str(i["id"]) for i in plan.repair.inserts}  # an insert's id is the walk's key
    for rp in plan.repair.rewrites:
        _add(plan, rp.thread_id, CAUSE_UNINDEXED if rp.key in added else CAUSE_MOVED_HOME,
             "folders in its file remapped")
    for c in plan.migration.changes:
        line1 = (c.edit.old_values if c.edit is not None else {}).get("model_provider", c.old_provider)
        old = c.old_provider if c.db_change else "(first line only) " + str(line1)  # line 1's value, not the row's
        _add(plan, c.thread_id, CAUSE_PROVIDER, f"provider {safe_str(old)} -> {safe_str(plan.migration.target)}")
    for ins in plan.repair.inserts:
        _add(plan, str(ins["id"]), CAUSE_UNINDEXED, "added to the index in " + safe_str(ins.get("cwd") or "(no folder)"))
    for f in plan.history.resets:
        _add(plan, f.thread_id, CAUSE_HISTORY, f"stored history reset ({f.kind})")
    for tid, name in plan.history.names:
        _add(plan, tid, CAUSE_NAMES, f"name {safe_str(name)!r} restored")


def recover_ops(plan: RecoverPlan, now: float) -> List[Op]:
    """Every change as ops of one run, in the order they must run: the provider's line-1 edits and
    the remap rewrites where the files lie now, then folders and moves, then rows (repair's,
    inserts before the provider updates of the rows they add), other DBs, history deletes."""
    home = plan.inputs.home
    db = home.state_db.path
    hist = history_db_path(db)
    repair = plan.repair
    mig = migration_ops(db, hist, plan.migration, reset=[f.thread_id for f in plan.history.resets])
    file_first = [o for o in mig if not o.DB_OP]
    mig_db = [o for o in mig if o.DB_OP]
    ops: List[Op] = list(file_first)
    ops += remap_ops(plan.inputs, repair)
    ops += repair_ops(db, repair, thread_columns_of(db), now)
    for other in repair.others:
        ops += other_db_ops(other, thread_columns_of(other.db))
    ops += mig_db
    ops += history_ops(hist, plan.history)
    return ops


def manifest_csv(plan: RecoverPlan, ts: str) -> bytes:
    import csv  # the manifest is written only when applying
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "cause", "change", "ts"])
    for tid, causes in plan.causes.items():
        w.writerow([tid, "; ".join(causes), "; ".join(plan.detail.get(tid, [])), ts])
    return buf.getvalue().encode("utf-8")


def apply_recover(plan: RecoverPlan, force: bool = False, now: Optional[float] = None,
                  progress: Optional[Progress] = None) -> Dict[str, Any]:
    """The whole recovery through the one executor, as one run."""
    home = plan.inputs.home
    stamp = time.time() if now is None else now
    ts = datetime.now().isoformat(timespec="seconds")
    from sessionkit.runlog.writerun import execute  # the executor: loaded only to apply
    from sessionkit.fixes.compressed import decompress_first
    ops = recover_ops(plan, stamp)
    pre = decompress_first(home, ops, force, progress)  # compressed rollouts: decompressed first
    r = execute(home, RUN_KIND, ops, manifest_csv(plan, ts), force, progress)
    return {"run_dir": str(r.run_dir), "journal": str(r.journal), "manifest_csv": str(r.manifest),
            "backups": {safe_str(db): str(b) for db, b in r.backups.items()},
            "applied": dict(sorted(r.applied.items())),
            "rows_per_db": {safe_str(db): n for db, n in r.rows.items()},
            "skipped_at_apply": skipped_at_apply(pre, r.skipped),
            "archived_after": archived_count(home.state_db.path), "decompression": pre,
            "provider_distribution_after": provider_counts(home.state_db.path),
            "rollback": r.rollback_command(home)}


def plan_report(plan: RecoverPlan, names: Dict[str, str], sample: int) -> Dict[str, Any]:
    groups = plan.groups()
    return {
        "remap": [f"{safe_str(a)}={safe_str(b)}" for a, b in plan.options.remaps],
        "remap_from": plan.options.remap_from,
        "target_provider": plan.migration.target,
        "unarchive_enabled": plan.options.unarchive,
        "history_fix_enabled": plan.options.fix_history,
        "sessions": len(plan.causes),
        "by_cause": {c: len(ids) for c, ids in groups.items()},
        "causes_sample": {c: [{"thread_id": t, "session": names.get(t, t), "causes": plan.causes[t],
                               "changes": plan.detail.get(t, [])} for t in ids[:sample]]
                          for c, ids in groups.items()},
        "planned_moves": len(plan.repair.moves),
        "planned_row_updates": len(plan.repair.rows),
        "planned_row_inserts": len(plan.repair.inserts),
        "planned_rollout_rewrites": len(plan.repair.rewrites),
        "planned_line1_rewrites": sum(1 for c in plan.migration.changes if c.edit is not None) + len(plan.folded),
        "planned_provider_row_updates": sum(1 for c in plan.migration.changes if c.db_change),
        "planned_history_resets": len(plan.history.resets),
        "decompress_first": compressed_count(rewritten_files(plan)),
        "planned_name_restores": len(plan.history.names),
        "warnings": list(plan.migration.warnings),
        "suggested_remap": plan.repair.suggested_remap,
        "skipped": len(plan.skipped),
        "skipped_sample": [{"thread_id": t, "session": names.get(t, t), "reason": r}
                           for t, r in plan.skipped[:sample]],
    }


# --- edges: what the apply will refuse, said by the dry-run; the decompression's skips named ---

def rewritten_files(plan: RecoverPlan) -> List[str]:
    """The rollouts the run rewrites (line 1 or folders), as the rows name them (`.jsonl`)."""
    return [str(c.path) for c in plan.migration.changes if c.edit is not None and c.path is not None] + \
        [str(rp.path) for rp in plan.repair.rewrites]


HARD_LINKED_REWRITE = ("its rollout is hard-linked ({links} names for one file, e.g. a backup made with cp -al): "
                       "writing it would change the other copies too; left alone")


def predict_link_skips(plan: RecoverPlan) -> None:
    """A rollout the run would rewrite (or decompress) that has other hard links is refused by the
    apply: the dry-run says so now, and the session is not counted as one to recover."""
    from sessionkit.codexfiles.zstd import ZST
    by_path: Dict[str, str] = {str(c.path): c.thread_id for c in plan.migration.changes
                               if c.edit is not None and c.path is not None}
    by_path.update({str(rp.path): rp.thread_id for rp in plan.repair.rewrites})
    for path, tid in by_path.items():
        links = 1
        for p in (path, path + ZST):
            try:
                links = os.lstat(p).st_nlink
                break
            except OSError:
                continue
        if links > 1 and tid in plan.causes:
            del plan.causes[tid]
            plan.detail.pop(tid, None)
            plan.predicted.append((tid, HARD_LINKED_REWRITE.format(links=links)))


def skipped_at_apply(pre: Optional[Dict[str, Any]], skipped: Sequence[Tuple[str, str]]) -> List[Dict[str, str]]:
    """The threads the run left, each once: a rollout the decompression left compressed is named
    with that reason (the run then found no `.jsonl` to write)."""
    out: Dict[str, str] = {}
    for s in (pre or {}).get("skipped") or []:
        out.setdefault(norm_id(s["thread_id"]), str(s["reason"]))
    firsts = {norm_id(s["thread_id"]): str(s["thread_id"]) for s in (pre or {}).get("skipped") or []}
    for t, why in skipped:
        firsts.setdefault(norm_id(t), t)
        out.setdefault(norm_id(t), why)
    return [{"thread_id": firsts[k], "reason": why} for k, why in out.items()]
