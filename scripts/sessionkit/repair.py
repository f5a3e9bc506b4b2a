"""Plan and apply a repair: stale paths, moved homes, archived threads, unindexed rollouts."""
from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import UserError
from .audit import classify_orphan
from .locks import explain_live
from .snapshot import AuditInputs
from .history_check import names_from_session_index
from .progress import Progress
from .paths import (has_prefix, home_prefix_counts, is_inside, is_windows_absolute, replace_prefix,
                    resolves_inside, safe_str)
from .rollout_index import RolloutFile, file_path_for, not_unicode, row_path_of, unusable_reason
from .rollout_scan import Unimportable, row_from_rollout
from .ops import Mkdir, Move, OffsetShift, Op, RolloutRewrite, RowInsert, RowUpdate, SymlinkRepoint
from .statedb import ThreadRow, open_readonly, thread_columns, unbindable
from .writerun import execute
from .decompress import decompress_first
from .zstd import compressed_count
from .projects import remap_plan_ops as project_roots_plan

Remap = Tuple[str, str]


@dataclass
class MovePlan:
    thread_id: str
    src: Path
    dst: Path
    why: str  # "fix path" or "unarchive"
    keep_mtime: bool  # False for unarchive: Codex sets the mtime to now


@dataclass
class RowChange:
    thread_id: str
    old: Dict[str, Any]
    new: Dict[str, Any]
    why: List[str]


@dataclass
class RepairPlan:
    moves: List[MovePlan] = field(default_factory=list)
    rows: List[RowChange] = field(default_factory=list)
    inserts: List[Dict[str, Any]] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    suggested_remap: Optional[str] = None
    fix_paths: bool = True
    unarchive: bool = True
    archived_before: int = 0
    remaps: List[Remap] = field(default_factory=list)  # applied to line 1 and symlinks too
    rewrites: List["RolloutPlan"] = field(default_factory=list)  # rollouts whose cwd is remapped
    others: List["OtherDbPlan"] = field(default_factory=list)  # every other state DB of the home
    project_ops: List[Op] = field(default_factory=list)  # project_roots moved by --remap-prefix (projects.py)
    projects: Dict[str, Any] = field(default_factory=dict)  # what the report says about them


@dataclass
class RolloutPlan:
    """A remapped thread's rollout: line 1's fields and the cwd of its later lines (read in full)."""
    thread_id: str
    path: Path
    set: Dict[str, Any]
    cwd_lines: int
    grows: bool


@dataclass
class OtherDbPlan:
    """Row changes for another state DB indexing this home's rollouts (the desktop app's
    <home>/sqlite/state_5.sqlite): the used DB's changes applied to its rows too."""
    db: Path
    rows: List[RowChange] = field(default_factory=list)
    inserts: List[Dict[str, Any]] = field(default_factory=list)


def parse_remaps(values: Sequence[str]) -> List[Remap]:
    """OLD=NEW pairs; both sides absolute paths, or a row would get a relative path written into it."""
    out = []
    for v in values:
        if "=" not in v:
            raise UserError(f"--remap-prefix wants OLD=NEW, got {safe_str(v)!r}")
        old, new = v.split("=", 1)
        if not old or not new:
            raise UserError(f"--remap-prefix wants OLD=NEW with both sides set, got {safe_str(v)!r}")
        for side in (old, new):
            problem = _remap_side_problem(side)
            if problem:
                raise UserError(f"--remap-prefix {safe_str(v)!r}: {safe_str(side)!r} {problem}")
        out.append((old, new))
    return out


def _remap_side_problem(side: str) -> Optional[str]:
    if any(ord(c) < 32 for c in side):
        return "holds a control character (NUL, newline, ...)"
    if not_unicode(side):
        return "is not valid UTF-8"
    if side.startswith("~"):
        return "starts with ~, which is not expanded here: write the absolute path"
    if not (side.startswith("/") or is_windows_absolute(side)):
        return "is not an absolute path"
    return None


def _remap(value: str, remaps: List[Remap]) -> str:
    for old, new in remaps:
        if has_prefix(value, old):
            return replace_prefix(value, old, new) or value
    return value


def _sane_target(path: Path, root: Path) -> bool:
    """A place we may create a rollout: under sessions/ or archived_sessions/, resolving inside the home."""
    text = str(path)
    if not path.is_absolute() or "\x00" in text or "\n" in text:
        return False
    if not (is_inside(path, root / "sessions") or is_inside(path, root / "archived_sessions")):
        return False
    parent = path.parent
    while not parent.exists() and parent != root:
        parent = parent.parent
    return resolves_inside(parent, root)


def move_problem(move: "MovePlan", root: Path) -> Optional[str]:
    """Why this move may not happen (checked in the plan, so the dry-run shows it), or None."""
    for end in (move.src, move.dst):
        if not_unicode(str(end)):
            return f"{safe_str(end)} is not a valid UTF-8 path (cannot be journaled)"
    if not resolves_inside(move.src, root):
        return f"{safe_str(move.src)} resolves outside the Codex home"
    if not _sane_target(move.dst, root):
        return (f"cannot move to {safe_str(move.dst)}: not a safe place inside sessions/ or archived_sessions/ "
                f"(a folder on the way is a symlink out of the home, or the path holds odd characters)")
    if os.path.lexists(str(move.dst)):
        return f"{safe_str(move.dst)} already exists"
    return None


def _usable(rf: RolloutFile, inputs: AuditInputs, tid: str) -> Optional[str]:
    """Why a found file cannot stand for this thread, or None when it can."""
    return unusable_reason(rf, inputs.meta_for(rf), tid)  # a compressed file: usable when zstd reads here


def unarchived_path(root: Path, rf: RolloutFile) -> Path:
    y, m, d = rf.date.split("-")
    return root / "sessions" / y / m / d / rf.name


def plan_repair(inputs: AuditInputs, fix_paths: bool = True, unarchive: bool = True,
                thread_ids: Sequence[str] = (), remaps: Sequence[Remap] = (),
                import_orphans: bool = False, now: Optional[float] = None,
                sub: bool = False) -> RepairPlan:
    """One pass over the rows with dictionary look-ups into the one-walk index. `sub`: the plan
    of another state DB's rows (no rollout reads, no further DBs)."""
    now = time.time() if now is None else now
    root = inputs.home.root
    plan = RepairPlan(fix_paths=fix_paths, unarchive=unarchive,
                      archived_before=sum(1 for r in inputs.rows if r.archived))
    wanted = {t.lower() for t in thread_ids}
    live = {t.lower() for t in inputs.activity.live_threads}
    remaps = list(remaps)
    plan.remaps = remaps
    taken: Dict[str, str] = {}  # destination path -> thread
    for row in sorted(inputs.rows, key=lambda r: r.id):
        if wanted and row.id.lower() not in wanted:
            continue
        _plan_row(plan, row, inputs, fix_paths, unarchive, remaps, live, taken, now)
    outside = home_prefix_counts((r.rollout_path for r in inputs.rows
                                  if r.rollout_path and not is_inside(r.rollout_path, root)), root)
    if outside and not remaps:
        old = outside.most_common(1)[0][0]
        plan.suggested_remap = f"--remap-prefix {safe_str(old)}={safe_str(root)}"
    if import_orphans:
        _plan_imports(plan, inputs, wanted, live, now)
    plan.skipped = [(t, explain_live(r, inputs.activity, t)) for t, r in plan.skipped]
    if not sub:
        if remaps:
            _plan_rewrites(plan, inputs)
            plan.project_ops, plan.projects = project_roots_plan(inputs.home, remaps, other_state_dbs(inputs.home))
        _plan_other_dbs(plan, inputs, thread_ids, import_orphans, now)
    return plan


def other_state_dbs(home: Any) -> List[Path]:
    """The home's other state DBs of the current schema (the desktop app's, one left by another
    sqlite_home): Codex started with other settings lists from them."""
    from .home import STATE_DB_NAME
    return [d.path for d in home.other_dbs if d.path.name == STATE_DB_NAME and d.path.is_file()]


def _row_values(row: ThreadRow) -> Dict[str, Any]:
    return {"rollout_path": row.rollout_path, "cwd": row.cwd, "archived": int(row.archived),
            "archived_at": row.archived_at, "updated_at": row.updated_at, "updated_at_ms": row.updated_at_ms}


def _plan_other_dbs(plan: RepairPlan, inputs: AuditInputs, thread_ids: Sequence[str],
                    import_orphans: bool, now: float) -> None:
    """Each other state DB ends as the used one: the used DB's row changes applied to its rows of
    the same threads; its other rows planned on their own (row-only changes; a row that would
    need a file move the used DB's plan does not make is skipped, naming that DB)."""
    from .statedb import load_threads
    done = {r.thread_id.lower(): r for r in plan.rows}
    skipped = {t.lower() for t, _ in plan.skipped}
    for db in other_state_dbs(inputs.home):
        other = OtherDbPlan(db)
        try:
            rows = load_threads(db)
        except UserError as exc:
            plan.skipped.append((str(db), f"other state DB not read: {exc}"))
            continue
        rest = []
        for row in rows:
            tid = row.id.lower()
            change = done.get(tid)
            if change is not None:
                values = _row_values(row)
                old = {k: values[k] for k in change.new}
                if old != change.new:
                    other.rows.append(RowChange(row.id, old, dict(change.new), change.why + ["as in the used DB"]))
            elif tid not in skipped:
                rest.append(row)
        if rest or import_orphans:
            sub_inputs = AuditInputs(home=inputs.home, rows=rest, index=inputs.index, metas=inputs.metas,
                                     activity=inputs.activity, heads=inputs.heads)
            sub = plan_repair(sub_inputs, plan.fix_paths, plan.unarchive, thread_ids, plan.remaps,
                              import_orphans, now, sub=True)
            moved = {m.thread_id.lower() for m in sub.moves}
            for r in sub.rows:
                if r.thread_id.lower() in moved:
                    plan.skipped.append((r.thread_id, f"{safe_str(db)}: its row would need a file move the used "
                                                      f"DB's plan does not make; run again with --sqlite-home "
                                                      f"{safe_str(db.parent)}"))
                else:
                    other.rows.append(r)
            other.inserts = [i for i in sub.inserts if i["id"].lower() not in moved]
            plan.skipped.extend((t, f"{safe_str(db)}: {why}") for t, why in sub.skipped)
        if other.rows or other.inserts:
            plan.others.append(other)


def _plan_rewrites(plan: RepairPlan, inputs: AuditInputs) -> None:
    """Which remapped threads' rollouts get line 1 and the cwd of later lines rewritten; reads only
    those rollouts (in full: a resumed thread takes the cwd of its last thread_settings_applied
    event, not line 1's; turn_context and world_state lines are rewritten too)."""
    from .zstd import cwd_lines, line1_payload
    moved = {m.thread_id: m.src for m in plan.moves}
    parents = {m.forked_from_id.lower() for rf in inputs.index.files
               for m in [inputs.meta_for(rf)] if m.forked_from_id}
    for r in plan.rows:
        if not any(w.startswith("remap") for w in r.why):
            continue
        tid = r.thread_id
        path = moved.get(tid)
        if path is None:
            cands = inputs.index.by_thread.get(tid.lower(), [])
            if len(cands) != 1:
                continue
            path = cands[0].path
        payload = line1_payload(str(path))  # a compressed rollout is read decompressed
        if payload is None:
            continue
        new: Dict[str, Any] = {}
        if isinstance(payload.get("cwd"), str) and _remap(payload["cwd"], plan.remaps) != payload["cwd"]:
            new["cwd"] = _remap(payload["cwd"], plan.remaps)
        roots = payload.get("runtime_workspace_roots")
        if isinstance(roots, list) and all(isinstance(x, str) for x in roots):
            remapped = [_remap(x, plan.remaps) for x in roots]
            if remapped != roots:
                new["runtime_workspace_roots"] = remapped
        try:
            lines = [t for t in cwd_lines(str(path)) if any(_remap(c, plan.remaps) != c for c in t.cwds)]
        except OSError as exc:
            plan.skipped.append((tid, f"rollout not read ({exc.strerror or exc}): its cwd is remapped in the row only"))
            continue
        if not new and not lines:
            continue
        grows = len(json.dumps(new, ensure_ascii=False)) > len(json.dumps(
            {k: payload[k] for k in new}, ensure_ascii=False)) or any(
            len(_remap(c, plan.remaps).encode()) > len(c.encode()) for t in lines for c in t.cwds)
        if grows and tid.lower() in parents:
            plan.skipped.append((tid, "line 1 and the later lines' cwd left as they are: the rewrite grows the "
                                      "file and a fork records byte offsets into this rollout (the row's cwd "
                                      "is still remapped; a resumed turn will write the old cwd back)"))
            continue
        plan.rewrites.append(RolloutPlan(tid, Path(row_path_of(str(path))), new, len(lines), grows))


def _plan_row(plan: RepairPlan, row: ThreadRow, inputs: AuditInputs, fix_paths: bool, unarchive: bool,
              remaps: List[Remap], live: set, taken: Dict[str, str], now: float) -> None:
    root = inputs.home.root
    tid = row.id.lower()
    new: Dict[str, Any] = {}
    why: List[str] = []
    stored = _remap(row.rollout_path, remaps) if remaps else row.rollout_path
    cwd = _remap(row.cwd, remaps) if remaps else row.cwd
    if cwd != row.cwd:
        new["cwd"] = cwd
        why.append("remap cwd")
    if stored != row.rollout_path:
        new["rollout_path"] = stored
        why.append("remap rollout_path")
    current = inputs.index.by_path.get(stored)
    if current is not None and (_usable(current, inputs, tid) is not None):
        current = None
    needs_fix = current is None
    if needs_fix and not fix_paths and not (unarchive and row.archived):
        if new:
            _add_row(plan, row, new, why, live)
        return
    move: Optional[MovePlan] = None
    if needs_fix:
        cands = inputs.index.by_thread.get(tid, [])
        if len(cands) != 1:
            reason = "no rollout file for this thread anywhere" if not cands else \
                f"ambiguous: {len(cands)} rollout files carry this thread id"
            plan.skipped.append((row.id, reason))
            return
        problem = _usable(cands[0], inputs, tid)
        if problem:
            plan.skipped.append((row.id, problem))
            return
        current = cands[0]
        target = Path(stored)
        if fix_paths and stored and is_inside(target, root) and _sane_target(target, root) \
                and target.name == Path(current.row_path).name and not target.exists() \
                and not os.path.lexists(file_path_for(stored, current)):
            move = MovePlan(row.id, current.path, Path(file_path_for(stored, current)), "fix path", keep_mtime=True)
        elif fix_paths or (unarchive and row.archived):
            if stored and is_inside(Path(stored), root) and not _sane_target(Path(stored), root):
                why.append("stored path unsafe (outside sessions/, a symlink out, or odd characters)")
            new["rollout_path"] = current.row_path
            why.append("point rollout_path at the real file")
    assert current is not None
    final = Path(row_path_of(str(move.dst))) if move else Path(current.row_path)
    if unarchive and row.archived:
        dst = unarchived_path(root, current)
        if current.archived or is_inside(final, root / "archived_sessions"):
            if dst.exists() and dst != current.path:
                plan.skipped.append((row.id, f"cannot unarchive: {safe_str(dst)} already exists"))
                return
            move = MovePlan(row.id, current.path, dst, "unarchive", keep_mtime=False)
            final = Path(row_path_of(str(dst)))
        new.update({"archived": 0, "archived_at": None, "rollout_path": str(final)})
        ts = int(now)
        new.update({"updated_at": ts, "updated_at_ms": int(now * 1000)})
        why.append("unarchive")
    if move is not None:
        if tid in live:
            plan.skipped.append((row.id, "live thread (its writer lock is held): never moved"))
            return
        if str(move.dst) in taken:
            plan.skipped.append((row.id, f"another thread also wants {safe_str(move.dst)}"))
            return
        problem = move_problem(move, root)
        if problem:
            plan.skipped.append((row.id, f"{move.why}: {problem}"))
            return
        taken[str(move.dst)] = row.id
        plan.moves.append(move)
    if new.get("rollout_path") == row.rollout_path:
        del new["rollout_path"]
    if new:
        _add_row(plan, row, new, why, live)


def _add_row(plan: RepairPlan, row: ThreadRow, new: Dict[str, Any], why: List[str], live: set) -> None:
    if row.id.lower() in live:
        plan.skipped.append((row.id, "live thread (its writer lock is held): row left alone"))
        plan.moves = [m for m in plan.moves if m.thread_id != row.id]
        return
    values = {"rollout_path": row.rollout_path, "cwd": row.cwd, "archived": int(row.archived),
              "archived_at": row.archived_at, "updated_at": row.updated_at, "updated_at_ms": row.updated_at_ms}
    old = {k: values[k] for k in new}
    bad = unbindable([row.id, *old.values(), *new.values()])
    if bad:
        plan.skipped.append((row.id, f"row left alone: it holds {bad}"))
        plan.moves = [m for m in plan.moves if m.thread_id != row.id]
        return
    plan.rows.append(RowChange(row.id, old, new, why))


def _plan_imports(plan: RepairPlan, inputs: AuditInputs, wanted: set, live: set, now: float) -> None:
    row_ids = {r.id.lower() for r in inputs.rows}
    provider = inputs.home.config.model_provider
    names = names_from_session_index(inputs.home)  # a re-created row keeps the thread's name
    for tid, files in sorted(inputs.index.by_thread.items()):
        if tid in row_ids or (wanted and tid not in wanted):
            continue
        if len(files) != 1:
            plan.skipped.append((tid, f"orphan with {len(files)} files: not imported"))
            continue
        rf = files[0]
        reason = classify_orphan(rf, live, now)
        if reason != "importable":
            plan.skipped.append((tid, reason))
            continue
        problem = _usable(rf, inputs, tid)
        if problem:
            plan.skipped.append((tid, f"orphan not imported: {problem}"))
            continue
        try:
            plan.inserts.append(row_from_rollout(rf.path, tid, rf.archived, provider))
        except Unimportable as exc:
            plan.skipped.append((tid, f"orphan not imported: {exc}"))
            continue
        if tid in names:
            plan.inserts[-1]["name"] = names[tid]


def _manifest(plan: RepairPlan, ts: str) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "action", "old", "new", "ts"])
    for m in plan.moves:
        w.writerow([m.thread_id, f"move ({m.why})", str(m.src), str(m.dst), ts])
    for r in plan.rows:
        w.writerow([r.thread_id, "row " + ", ".join(r.why), repr(r.old), repr(r.new), ts])
    for ins in plan.inserts:
        w.writerow([ins["id"], "insert row", "", ins["rollout_path"], ts])
    return buf.getvalue().encode("utf-8")


def repair_ops(db: Path, plan: RepairPlan, cols: Sequence[str], now: float) -> List[Op]:
    """The plan as typed operations: folders and moves, then row updates and inserts (only the
    columns this DB has)."""
    ops: List[Op] = []
    made: set = set()
    for m in plan.moves:
        missing = []
        parent = m.dst.parent
        while not parent.exists() and str(parent) not in made and parent != parent.parent:
            missing.append(parent)
            parent = parent.parent
        for d in reversed(missing):
            made.add(str(d))
            ops.append(Mkdir(str(d)))
        ops.append(Move(m.thread_id, str(m.src), str(m.dst), None if m.keep_mtime else int(now * 1e9)))
    keep = set(cols)
    for r in plan.rows:
        new, old = _only(r.new, keep), _only(r.old, keep)
        if new:
            ops.append(RowUpdate(str(db), "threads", {"id": r.thread_id}, old, new, r.thread_id))
    for ins in plan.inserts:
        row = _only(ins, keep)
        ops.append(RowInsert(str(db), "threads", row, {"id": ins["id"]}, ins["id"]))
    return ops


def other_db_ops(other: OtherDbPlan, cols: Sequence[str]) -> List[Op]:
    """Another state DB's row updates and inserts (only the columns it has); each op carries its
    thread id, so a thread skipped at apply time is skipped in every DB."""
    keep = set(cols)
    ops: List[Op] = []
    for r in other.rows:
        new, old = _only(r.new, keep), _only(r.old, keep)
        if new:
            ops.append(RowUpdate(str(other.db), "threads", {"id": r.thread_id}, old, new, r.thread_id))
    for ins in other.inserts:
        ops.append(RowInsert(str(other.db), "threads", _only(ins, keep), {"id": ins["id"]}, ins["id"]))
    return ops


def apply_repair(inputs: AuditInputs, plan: RepairPlan, force: bool = False,
                 now: Optional[float] = None, progress: Optional[Progress] = None,
                 extra_ops: Sequence[Op] = ()) -> Dict[str, Any]:
    """Run the plan's ops through the one executor: moves first, then every row change in one
    transaction; a thread whose move cannot happen keeps its row too."""
    home = inputs.home
    ts = datetime.now().isoformat(timespec="seconds")
    stamp = time.time() if now is None else now
    ops = remap_ops(inputs, plan) + repair_ops(home.state_db.path, plan, thread_columns_of(home.state_db.path), stamp)
    for other in plan.others:
        ops += other_db_ops(other, thread_columns_of(other.db))
    ops += list(extra_ops) + plan.project_ops
    pre = decompress_first(home, ops, force, progress)  # compressed rollouts: decompressed first, own run
    r = execute(home, "session_repair", ops, _manifest(plan, ts), force, progress)
    plan.skipped.extend(r.skipped)
    done = {t for t, _ in r.skipped}
    return {"run_dir": str(r.run_dir), "db_backup": str(r.backups.get(str(home.state_db.path), "")) or None,
            "manifest_csv": str(r.manifest), "journal": str(r.journal), "moved": r.applied["move"],
            "path_moves_applied": sum(1 for m in plan.moves if m.why == "fix path" and m.thread_id not in done),
            "unarchived_rows": sum(1 for x in plan.rows if "unarchive" in x.why and x.thread_id not in done),
            "archived_after": archived_count(home.state_db.path),
            "updated_rows": r.applied["row_update"], "inserted_rows": r.applied["row_insert"],
            "line1_rewritten": r.applied["line1"] + r.applied["rollout_rewrite"],
            "symlinks_repointed": r.applied["symlink"],
            "project_roots_remapped": len(plan.project_ops),
            "history_rows_deleted": r.applied["row_delete"],
            "rows_per_db": {safe_str(db): n for db, n in r.rows.items()},
            "other_db_backups": {safe_str(db): str(b) for db, b in r.backups.items()
                                 if db != str(home.state_db.path) and not db.endswith("thread_history_1.sqlite")},
            "skipped_at_apply": [{"thread_id": t, "reason": why} for t, why in r.skipped],
            "rollback": r.rollback_command(home), "decompression": pre}


def remap_ops(inputs: AuditInputs, plan: RepairPlan) -> List[Op]:
    """With --remap-prefix: each remapped thread's rollout as one RolloutRewrite (line 1's `cwd` and
    0.171's `runtime_workspace_roots`, and every `cwd` of the later lines: Codex re-reads them
    and writes a DB-only cwd back), its history offsets shifted in every state DB's history DB
    when it grows; and the home's symlinks into the old home (packages/*/current, without which
    0.171 does not start). Rollouts are rewritten where they lie before any move (ops run in order)."""
    if not plan.remaps:
        return []
    from .history_offsets import history_db_path, read_offsets, threads_with_offsets
    root = inputs.home.root
    ops: List[Op] = []
    hists = []
    for db in [inputs.home.state_db.path, *other_state_dbs(inputs.home)]:
        hist = history_db_path(db)
        if hist.is_file():
            conn = open_readonly(hist)
            hists.append((hist, conn, threads_with_offsets(conn)))
    try:
        pairs = [[a, b] for a, b in plan.remaps]
        for rp in plan.rewrites:
            rw = RolloutRewrite(rp.thread_id, str(rp.path), rp.set, pairs)
            ops.append(rw)
            for hist, conn, with_offsets in hists:
                if rp.thread_id in with_offsets:
                    ops.append(OffsetShift.following(str(hist), rw, read_offsets(conn, rp.thread_id)))
    finally:
        for _h, conn, _w in hists:
            conn.close()
    pkgs = root / "packages"
    for name in sorted(os.listdir(str(pkgs))) if pkgs.is_dir() and not pkgs.is_symlink() else []:
        link = pkgs / name / "current"  # a broken link (into the old home) is the case to fix
        if not link.is_symlink():
            continue
        target = os.readlink(str(link))
        new_target = _remap(target, plan.remaps)
        if new_target != target and os.path.exists(new_target if os.path.isabs(new_target)
                                                   else str(link.parent / new_target)):
            ops.append(SymlinkRepoint(str(link), target, new_target))
    return ops


def _line1_payload(path: Path) -> Optional[Dict[str, Any]]:
    from .line1 import read_line1
    line, _err = read_line1(path)
    try:
        payload = json.loads(line)["payload"] if line else None
    except (ValueError, KeyError, TypeError):
        return None
    return payload if isinstance(payload, dict) else None


def thread_columns_of(db: Path) -> List[str]:
    conn = open_readonly(db)
    try:
        return thread_columns(conn, db)
    finally:
        conn.close()


def _only(values: Dict[str, Any], cols: set) -> Dict[str, Any]:
    return {k: v for k, v in values.items() if k in cols}


def archived_count(db: Path) -> int:
    conn = open_readonly(db)
    try:
        return int(conn.execute("SELECT count(*) FROM threads WHERE archived<>0").fetchone()[0])
    finally:
        conn.close()


def plan_report(plan: RepairPlan, sample: int) -> Dict[str, Any]:
    return {
        "path_fix_enabled": plan.fix_paths,
        "unarchive_enabled": plan.unarchive,
        "archived_before": plan.archived_before,
        "planned_path_moves": sum(1 for m in plan.moves if m.why == "fix path"),
        "planned_unarchive_moves": sum(1 for m in plan.moves if m.why == "unarchive"),
        "planned_row_updates": len(plan.rows),
        "planned_row_inserts": len(plan.inserts),
        "unarchive_rows": sum(1 for r in plan.rows if "unarchive" in r.why),
        "repoint_rows": sum(1 for r in plan.rows if "point rollout_path at the real file" in r.why),
        "remap_rows": sum(1 for r in plan.rows if any(w.startswith("remap") for w in r.why)),
        "planned_rollout_rewrites": len(plan.rewrites),
        "planned_cwd_line_rewrites": sum(r.cwd_lines for r in plan.rewrites),
        "decompress_first": compressed_count(r.path for r in plan.rewrites),
        "other_dbs": [{"db": safe_str(o.db), "planned_row_updates": len(o.rows),
                       "planned_row_inserts": len(o.inserts)} for o in plan.others],
        "skipped": len(plan.skipped),
        "skipped_sample": [{"thread_id": t, "reason": r} for t, r in plan.skipped[:sample]],
        "suggested_remap": plan.suggested_remap,
        **plan.projects,
        "moves_sample": [f"{m.thread_id}: {safe_str(m.src)} -> {safe_str(m.dst)} ({m.why})" for m in plan.moves[:sample]],
        "rows_sample": [{"thread_id": r.thread_id, "why": r.why, "old": r.old, "new": r.new} for r in plan.rows[:sample]],
        "inserts_sample": [{"thread_id": i["id"], "rollout_path": safe_str(i["rollout_path"]),
                            "model_provider": i["model_provider"], "cwd": i["cwd"], "preview": i["preview"][:80]}
                           for i in plan.inserts[:sample]],
    }
