"""Plan and apply a repair: stale paths, moved homes, archived threads, unindexed rollouts."""
from __future__ import annotations

import io
import os
import sqlite3
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from sessionkit.codexfiles.reasons import (AMBIGUOUS_FILES, HARD_LINKED, LIVE_GROUP, LIVE_MOVE, LIVE_ROW, NO_FILE,  # noqa: F401
                                           ROW_FOLLOWS_FILE, UNARCHIVE_NEXT_RUN)
from sessionkit.codexfiles.ids import norm_id
from sessionkit.codexfiles.record import Record
from sessionkit import UserError
from sessionkit.diagnose.audit import classify_orphan
from sessionkit.codexfiles.locks import explain_live
from sessionkit.diagnose.snapshot import AuditInputs
from sessionkit.codexfiles.thread_names import named_threads, names_from_session_index
from sessionkit.ui.progress import Progress
from sessionkit.codexfiles.paths import home_prefix_counts, inside_test, is_inside, resolves_inside, safe_str
from sessionkit.codexfiles.rollout_edit import Remap, parse_remaps, plan_file, remap  # noqa: F401  (parse_remaps: the scripts')
from sessionkit.codexfiles.rollout_index import RolloutFile, file_path_for, not_unicode, row_path_of, unusable_reason
from sessionkit.codexfiles.rollout_scan import Unimportable, row_from_rollout
from sessionkit.runlog.ops import Mkdir, Move, OffsetShift, Op, RolloutEdit, RolloutRewrite, RowInsert, RowUpdate, SymlinkRepoint
from sessionkit.codexfiles.thread_files import candidates, thread_file
from sessionkit.codexfiles.thread_graph import SubAgents, ThreadGraph, graph_of, members, sub_agents_of
from sessionkit.fixes.forks import fork_rewrites, join_groups, live_groups, with_sub_agents
from sessionkit.codexfiles.statedb import ThreadRow, open_readonly, thread_columns, unbindable
from sessionkit.fixes.compressed import decompress_first
from sessionkit.codexfiles.zstd import compressed_count
from sessionkit.fixes.project_remap import remap_plan_ops as project_roots_plan


class MovePlan(Record):
    """A rollout moved: `why` is "fix path" or "unarchive"; keep_mtime False for unarchive (Codex
    sets the mtime to now); key is the thread's normalised id, thread_id the row's stored id."""
    __slots__ = ("thread_id", "src", "dst", "why", "keep_mtime", "key")

    def __init__(self, thread_id: str, src: Path, dst: Path, why: str, keep_mtime: bool, key: str) -> None:
        self.thread_id, self.src, self.dst, self.why, self.keep_mtime, self.key = (
            thread_id, src, dst, why, keep_mtime, key)


class RowChange(Record):
    """A thread row's columns changed: thread_id is the row's stored id (the SQL finds the row by
    it), key the normalised id (ThreadRow.key), compared everywhere."""
    __slots__ = ("thread_id", "old", "new", "why", "key")

    def __init__(self, thread_id: str, old: Dict[str, Any], new: Dict[str, Any], why: List[str],
                 key: str) -> None:
        self.thread_id, self.old, self.new, self.why, self.key = thread_id, old, new, why, key


class RepairPlan(Record):
    """Everything a repair changes, planned before anything is written."""
    __slots__ = ("moves", "rows", "inserts", "skipped", "left", "suggested_remap", "fix_paths", "unarchive",
                 "archived_before", "remaps", "rewrites", "graph", "forks_moved", "subs", "others", "links",
                 "project_ops", "projects")

    def __init__(self, fix_paths: bool = True, unarchive: bool = True, archived_before: int = 0,
                 suggested_remap: Optional[str] = None, remaps: Optional[List[Remap]] = None) -> None:
        self.moves: List[MovePlan] = []
        self.rows: List[RowChange] = []
        self.inserts: List[Dict[str, Any]] = []  # "id": the normalised id (from the walk)
        self.skipped: List[Tuple[str, str]] = []
        self.left: Set[str] = set()  # normalised ids of the threads skipped while planning
        self.suggested_remap = suggested_remap
        self.fix_paths = fix_paths
        self.unarchive = unarchive
        self.archived_before = archived_before
        self.remaps: List[Remap] = list(remaps or [])  # applied to line 1 and symlinks too
        self.rewrites: List[RolloutPlan] = []  # rollouts whose folders are remapped
        self.graph: Optional[ThreadGraph] = None  # forks into the remapped rollouts
        self.forks_moved = 0  # forks whose history_base moves with a growing parent
        self.subs = SubAgents()  # sub-agents go with their parents
        self.others: List[OtherDbPlan] = []  # every other state DB of the home
        self.links: List[Tuple[str, str, str]] = []  # (link, target, new target) re-pointed
        self.project_ops: List[Op] = []  # project_roots moved by --remap-prefix (project_remap.py)
        self.projects: Dict[str, Any] = {}  # what the report says about them

    def __repr__(self) -> str:  # the graph and sub-agents are the home's, not the plan's
        return (f"RepairPlan(moves={self.moves!r}, rows={self.rows!r}, inserts={self.inserts!r}, "
                f"skipped={self.skipped!r}, rewrites={self.rewrites!r})")

    def has_work(self) -> bool:
        return bool(self.moves or self.rows or self.inserts or self.others or self.links or self.project_ops)

    def skip(self, tid: str, key: str, reason: str) -> None:
        """A thread left alone while planning: shown by `tid`, kept out of every DB by `key`."""
        self.skipped.append((tid, reason))
        self.left.add(key)


class RolloutPlan(Record):
    """A remapped thread's rollout: line 1's fields and the cwd of its later lines (read in full);
    key is the normalised id (the row change's key)."""
    __slots__ = ("thread_id", "path", "set", "cwd_lines", "grows", "key")

    def __init__(self, thread_id: str, path: Path, set: Dict[str, Any], cwd_lines: int, grows: bool,
                 key: str) -> None:
        self.thread_id, self.path, self.set, self.cwd_lines, self.grows, self.key = (
            thread_id, path, set, cwd_lines, grows, key)


class OtherDbPlan(Record):
    """Row changes for another state DB indexing this home's rollouts (the desktop app's
    <home>/sqlite/state_5.sqlite): the used DB's changes applied to its rows too."""
    __slots__ = ("db", "rows", "inserts")

    def __init__(self, db: Path) -> None:
        self.db = db
        self.rows: List[RowChange] = []
        self.inserts: List[Dict[str, Any]] = []  # "id": the normalised id


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


# Why a thread is left alone (each printed with the thread it names).
# (NO_FILE, LIVE_MOVE, LIVE_ROW, HARD_LINKED, ROW_FOLLOWS_FILE, UNARCHIVE_NEXT_RUN: codexfiles/reasons.py)


class View:
    """Where each thread's rollout is: before the run (the used DB's plan, which may move files)
    or after its moves (every other state DB's plan: paths as they will be, not as they were)."""

    def __init__(self, index: Any, moves: Sequence[MovePlan] = ()) -> None:
        self.index = index
        self.dst = {str(m.src): m.dst for m in moves}
        self.src = {str(m.dst): m.src for m in moves}

    def at(self, path: str) -> Optional[Tuple[RolloutFile, str]]:
        """The file that will be at `path` (its index entry, read where it is now), or None; `path`
        given back as it is (a plan of a thousand rows makes no Path for it)."""
        if path in self.dst:
            return None
        src = self.src.get(path)
        rf = self.index.by_path.get(str(src) if src is not None else path)
        return (rf, path) if rf is not None else None

    def of(self, tid: str) -> List[Tuple[RolloutFile, Path]]:
        return [(rf, self.dst.get(rf.key, rf.path)) for rf in self.index.by_thread.get(tid, [])]


class Choice(Record):
    """What the user asked: path fixes, and which archived threads to bring back (none by default);
    unarchive_ids are normalised ids, stay the threads whose file is not moved in this run
    (rewritten in place first)."""
    __slots__ = ("fix_paths", "unarchive_all", "unarchive_ids", "stay")

    def __init__(self, fix_paths: bool = True, unarchive_all: bool = False,
                 unarchive_ids: frozenset = frozenset(), stay: frozenset = frozenset()) -> None:
        self.fix_paths, self.unarchive_all, self.unarchive_ids, self.stay = fix_paths, unarchive_all, unarchive_ids, stay

    def unarchives(self, key: str) -> bool:
        return (self.unarchive_all or key in self.unarchive_ids) and key not in self.stay


def plan_repair(inputs: AuditInputs, fix_paths: bool = True, unarchive: Any = False,
                thread_ids: Sequence[str] = (), remaps: Sequence[Remap] = (),
                import_orphans: bool = False, now: Optional[float] = None,
                names: Sequence[Tuple[str, str]] = (), sub: bool = False) -> RepairPlan:
    """One pass over the rows with dictionary look-ups into the one-walk index; then every other
    state DB from the picture of the home after this plan's moves. `unarchive`: True for every
    archived thread, or the (normalised) ids to bring back; archived threads stay archived otherwise. `names`:
    (stored thread id, name) restores, through the same skip-one-thread path as every row change.
    A thread whose rollout a remap rewrites is not also moved in the same run (its row is pointed
    at the file instead, or its unarchive waits for the next run, named with that reason): each
    run stays undoable as a whole. `sub`: the used DB's rows only (no rollout read in full, no
    other DB), for the audit's cheap look at a few sessions."""
    now = time.time() if now is None else now
    choice = Choice(fix_paths, unarchive is True,
                    frozenset(unarchive) if not isinstance(unarchive, bool) else frozenset())
    plan = _plan_once(inputs, choice, unarchive, thread_ids, remaps, import_orphans, now, names, sub)
    moved = {m.key: m.why for m in plan.moves}
    both = {r.key for r in plan.rewrites if r.key in moved}
    if both:
        choice = Choice(fix_paths, choice.unarchive_all, choice.unarchive_ids, frozenset(both))
        plan = _plan_once(inputs, choice, unarchive, thread_ids, remaps, import_orphans, now, names, sub)
        for t in sorted(both):
            if moved[t] == "unarchive":
                plan.skip(t, t, UNARCHIVE_NEXT_RUN)
    _skip_rows_not_as_read(plan, inputs)
    return plan


def _skip_rows_not_as_read(plan: RepairPlan, inputs: AuditInputs) -> None:
    """A row holding a value Codex never writes (archived=5, read as 1) would fail the apply's
    compare-and-set: its thread is skipped here with the apply's own check and reason, so the
    dry-run shows what the apply does (a skipped session, never a change)."""
    owner: Dict[int, Tuple[str, str]] = {}
    odd: List[Op] = []
    for db, rows in [(inputs.home.state_db.path, plan.rows), *((o.db, o.rows) for o in plan.others)]:
        if not rows:
            continue
        conn = open_readonly(db)
        try:
            keep = set(thread_columns(conn, db))
            for r in rows:
                old, new = _only(r.old, keep), _only(r.new, keep)
                if new and not _holds(conn, r.thread_id, old):
                    op = RowUpdate(str(db), "threads", {"id": r.thread_id}, old, new, r.thread_id)
                    owner[id(op)] = (r.thread_id, r.key)
                    odd.append(op)
        finally:
            conn.close()
    if not odd:
        return  # the common case: the apply's check module is not loaded by a dry-run
    from sessionkit.runlog.safety import rows_not_as_planned  # the apply's own check and words
    for op, why in rows_not_as_planned(odd):
        tid, key = owner[id(op)]
        if key not in plan.left:
            _drop_thread(plan, key)
            plan.skip(tid, key, why)


def _holds(conn: Any, tid: str, old: Dict[str, Any]) -> bool:
    """Does the row hold what the plan read, compared with SQLite's `IS` as the apply's check does?"""
    where = " AND ".join(f'"{c}" IS ?' for c in ["id", *old])
    try:
        return conn.execute(f"SELECT count(*) FROM threads WHERE {where}", [tid, *old.values()]).fetchone()[0] == 1
    except sqlite3.DatabaseError:
        return True  # the apply's columns check names it


def _plan_once(inputs: AuditInputs, choice: Choice, unarchive: Any, thread_ids: Sequence[str],
               remaps: Sequence[Remap], import_orphans: bool, now: float,
               names: Sequence[Tuple[str, str]], sub: bool = False) -> RepairPlan:
    """The plan for one choice: the used DB's rows and orphans, names, then every other state DB."""
    root = inputs.home.root
    fix_paths = choice.fix_paths
    plan = RepairPlan(fix_paths=fix_paths, unarchive=bool(unarchive),
                      archived_before=sum(1 for r in inputs.rows if r.archived))
    plan.subs = sub_agents_of(inputs)
    wanted = with_sub_agents(thread_ids, plan.subs) if thread_ids else set()  # a named thread brings its sub-agents
    live = set(inputs.activity.live_threads)
    remaps = list(remaps)
    plan.remaps = remaps
    taken: Dict[str, str] = {}  # destination path -> thread
    view = View(inputs.index)
    for row in sorted(inputs.rows, key=lambda r: r.id):
        if wanted and row.key not in wanted:
            continue
        _plan_row(plan, plan.rows, row, inputs, view, choice, remaps, live, taken, now, True)
    outside = home_prefix_counts((r.rollout_path for r in inputs.outside_home), root)  # found once, by the snapshot
    if outside and not remaps:
        old = outside.most_common(1)[0][0]
        plan.suggested_remap = f"--remap-prefix {safe_str(old)}={safe_str(root)}"
    if import_orphans:
        _plan_imports(plan, inputs, wanted, live, now)
    key_of = {r.id: r.key for r in inputs.rows} if names else {}  # a name restore names the row's stored id
    for tid, name in names:
        key = key_of.get(tid, tid)
        if not (wanted and key not in wanted) and \
                not _row_change(plan, plan.rows, tid, key, {"name": None}, {"name": name}, ["restore name"], live):
            _drop_thread(plan, key)
    if not sub:
        _plan_other_dbs(plan, inputs, wanted, import_orphans, live, now)
    plan.skipped = [(t, explain_live(r, inputs.activity, t)) for t, r in plan.skipped]
    if remaps and not sub:
        _plan_rewrites(plan, inputs)
    _group_waits(plan, live)
    if remaps and not sub:
        plan.links = daemon_links(root, remaps)
        plan.project_ops, plan.projects = project_roots_plan(inputs.home, remaps, other_state_dbs(inputs.home))
    return plan


def _group_waits(plan: RepairPlan, live: set) -> None:
    """A thread goes with its sub-agents: one Codex holds open keeps the whole group out, named."""
    shown = {i["id"]: i["id"] for i in plan.inserts}  # normalised id -> the id the report shows
    for each in (plan.rewrites, plan.moves, plan.rows):
        shown.update((x.key, x.thread_id) for x in each)
    for key, n in sorted(live_groups(shown, live, plan.subs).items()):
        _drop_thread(plan, key)
        plan.skip(shown[key], key, LIVE_GROUP.format(other=safe_str(n)))


def daemon_links(root: Path, remaps: Sequence[Remap]) -> List[Tuple[str, str, str]]:
    """The home's `packages/*/current` symlinks that point into the old home and whose remapped
    target exists (0.171 does not start until the daemon's link points inside the moved home)."""
    pkgs = root / "packages"
    out = []
    for name in sorted(os.listdir(str(pkgs))) if pkgs.is_dir() and not pkgs.is_symlink() else []:
        link = pkgs / name / "current"
        if not link.is_symlink():
            continue
        target = os.readlink(str(link))
        new = remap(target, list(remaps))
        if new != target and os.path.exists(new if os.path.isabs(new) else str(link.parent / new)):
            out.append((str(link), target, new))
    return out


def resolve_threads(inputs: AuditInputs, values: Sequence[str]) -> List[str]:
    """Thread ids for ids or names given on the command line (a name as `thread/name/set` gave it,
    from the row or session_index.jsonl); an unknown or ambiguous one is a UserError."""
    ids = {r.key for r in inputs.rows} | set(inputs.index.by_thread)
    named: Dict[str, List[str]] = {}
    in_rows = _row_names(inputs.home.state_db.path)
    for tid, name in in_rows.items():
        named.setdefault(name, []).append(tid)
    for tid, name in names_from_session_index(inputs.home).items():
        if tid not in in_rows:
            named.setdefault(name, []).append(tid)
    out = []
    for v in values:
        key = norm_id(v)  # an argument as typed: normalised here, where it enters
        if key in ids:
            out.append(key)
            continue
        hits = sorted(set(named.get(v, [])))
        if not hits:
            raise UserError(f"no thread with the id or name {safe_str(v)!r} in this Codex home")
        if len(hits) > 1:
            raise UserError(f"{len(hits)} threads are named {safe_str(v)!r} ({', '.join(hits)}): "
                            f"name one by its id")
        out.append(hits[0])
    return out


def _row_names(db: Path) -> Dict[str, str]:
    return named_threads(db) or {}


def other_state_dbs(home: Any) -> List[Path]:
    """The home's other state DBs of the current schema (the desktop app's, one left by another
    sqlite_home): Codex started with other settings lists from them."""
    from sessionkit.codexfiles.home import STATE_DB_NAME
    return [d.path for d in home.other_dbs if d.path.name == STATE_DB_NAME and d.path.is_file()]


def _row_values(row: ThreadRow) -> Dict[str, Any]:
    return {"rollout_path": row.rollout_path, "cwd": row.cwd, "archived": int(row.archived),
            "archived_at": row.archived_at, "updated_at": row.updated_at, "updated_at_ms": row.updated_at_ms}


def _plan_other_dbs(plan: RepairPlan, inputs: AuditInputs, wanted: set, import_orphans: bool,
                    live: set, now: float) -> None:
    """Each other state DB's rows planned on their own against the home after the used DB's plan
    (its moves done): a row follows its thread's file where it will be, and takes the used DB's
    changes of that thread (unarchive, remap); a thread it lacks is inserted from its file where it
    will be. A thread the used DB's plan leaves alone is left alone here too, and a thread one DB
    cannot take is left alone in every DB."""
    from sessionkit.codexfiles.statedb import load_threads
    asked = {r.key: r.new for r in plan.rows if "unarchive" in r.why}  # the user's own request
    inserted = {i["id"]: i for i in plan.inserts}
    left = set(plan.left)
    view = View(inputs.index, plan.moves)
    choice = Choice(plan.fix_paths)
    for db in other_state_dbs(inputs.home):
        other = OtherDbPlan(db)
        try:
            rows = load_threads(db)
        except UserError as exc:
            plan.skipped.append((str(db), f"other state DB not read: {exc}"))  # not a thread: none left out
            continue
        for row in sorted(rows, key=lambda r: r.id):
            tid = row.key
            if (wanted and tid not in wanted) or tid in left:
                continue
            mine: List[RowChange] = []
            if not _plan_row(plan, mine, row, inputs, view, choice, plan.remaps, live, {}, now, False, db):
                _drop_thread(plan, tid)
                continue
            target = {k: v for c in mine for k, v in c.new.items()}
            why = [w for c in mine for w in c.why]
            if tid in asked:
                target.update({k: v for k, v in asked[tid].items() if k not in ("cwd", "name")})
                why.append("unarchive, as in the used DB")
            values = _row_values(row)
            target = {k: v for k, v in target.items() if values.get(k) != v}
            if target and not _row_change(plan, other.rows, row.id, tid, {k: values[k] for k in target}, target,
                                          why, live, db):
                _drop_thread(plan, tid)
        if import_orphans:
            have = {r.key for r in rows}
            for ins in _inserts_for(plan, inputs, view, have, inserted, wanted, live, now):
                if _insert_ok(plan, ins, db):
                    other.inserts.append(ins)
                else:
                    _drop_thread(plan, ins["id"])
        if other.rows or other.inserts:
            plan.others.append(other)


def _inserts_for(plan: RepairPlan, inputs: AuditInputs, view: View, have: set, inserted: Dict[str, Any],
                 wanted: set, live: set, now: float) -> List[Dict[str, Any]]:
    """Rows for the threads another DB lacks: the used DB's insert, or one built from the file and
    pointed at where the file will be (an unarchived thread is not inserted as archived)."""
    root = inputs.home.root
    left = plan.left
    out = []
    for tid in sorted(inputs.index.by_thread):
        if tid in have or tid in left or (wanted and tid not in wanted):
            continue
        if tid in inserted:
            out.append(dict(inserted[tid]))
            continue
        if tid not in inputs.rows_by_id:
            continue  # an orphan the used DB's plan did not import: the same reason holds here
        files = view.of(tid)
        if len(files) != 1:
            continue
        rf, final = files[0]
        if classify_orphan(rf, live, now) != "importable" or _usable(rf, inputs, tid):
            continue
        archived = _in_archive(str(root))(str(final))
        try:
            ins = row_from_rollout(rf.path, tid, archived, inputs.home.config.model_provider)
        except Unimportable:
            continue
        ins["rollout_path"] = row_path_of(str(final))
        if str(final) != rf.key and not archived:
            ins["archived_at"] = None
        out.append(ins)
    return out


def _insert_ok(plan: RepairPlan, ins: Dict[str, Any], db: Optional[Path] = None) -> bool:
    bad = unbindable(ins.values())
    if bad:
        where = f"{safe_str(db)}: " if db is not None else ""
        plan.skip(ins["id"], ins["id"], f"{where}row not added: it holds {bad}")
        return False
    return True


def _drop_thread(plan: RepairPlan, t: str) -> None:
    """A thread one DB cannot take is left alone whole (`t`: its normalised id): its moves and row
    changes in every DB."""
    plan.moves = [m for m in plan.moves if m.key != t]
    plan.rows = [r for r in plan.rows if r.key != t]
    plan.inserts = [i for i in plan.inserts if i["id"] != t]
    plan.rewrites = [r for r in plan.rewrites if r.key != t]
    for o in plan.others:
        o.rows = [r for r in o.rows if r.key != t]
        o.inserts = [i for i in o.inserts if i["id"] != t]


def _plan_rewrites(plan: RepairPlan, inputs: AuditInputs) -> None:
    """Which remapped threads' rollouts get their folder records rewritten (line 1 and every later
    record Codex reads back: rollout_edit.FOLDER_RECORDS); reads only those rollouts, in full (a
    resumed thread takes the cwd of its last thread_settings_applied event, not line 1's). A
    growing rollout's forks move with it (their history_base), planned here, written together."""
    moved = {m.thread_id: m.src for m in plan.moves}
    for r in plan.rows:
        if not any(w.startswith("remap") for w in r.why):
            continue
        tid = r.thread_id
        path = moved.get(tid)
        if path is None:
            one = thread_file(inputs.index.by_thread.get(r.key, []))
            if one is None:
                continue
            path = one.path
        fp = plan_file(str(path), plan.remaps, digests=False)  # the one editor: the same plan the write makes
        if fp.problem:
            plan.skip(tid, r.key, f"rollout folders left as they are ({fp.problem}): its cwd is remapped "
                                  "in the row only")
            continue
        if not fp.spans:
            continue
        plan.rewrites.append(RolloutPlan(tid, Path(row_path_of(str(path))), {}, fp.folder_lines, fp.growth > 0,
                                         r.key))
    growing = [rp.path for rp in plan.rewrites if rp.grows]
    if growing and any(inputs.meta_for(rf).forked_from_id for rf in inputs.index.files):
        plan.graph = graph_of(inputs)
        plan.forks_moved = len(members(plan.graph, growing))


def _plan_row(plan: RepairPlan, out: List[RowChange], row: ThreadRow, inputs: AuditInputs, view: View,
              choice: Choice, remaps: List[Remap], live: set, taken: Dict[str, str], now: float,
              can_move: bool, db: Optional[Path] = None) -> bool:
    """One row's change against `view`; False when the thread is skipped (its reason recorded,
    naming `db` when it is not the used DB). A row whose file is elsewhere is pointed at it (or, in
    the used DB, the file moved back when the row's path is on the same side of the archive); a row
    whose archive flag disagrees with its file's folder follows the file, as Codex's own repair of
    a row does; only a thread the user asked for is unarchived."""
    where = f"{safe_str(db)}: " if db is not None else ""

    def skip(reason: str) -> bool:
        plan.skip(row.id, row.key, where + reason)
        return False

    root = inputs.home.root
    tid = row.key
    new: Dict[str, Any] = {}
    why: List[str] = []
    stored = remap(row.rollout_path, remaps) if remaps else row.rollout_path
    cwd = remap(row.cwd, remaps) if remaps else row.cwd
    if cwd != row.cwd:
        new["cwd"] = cwd
        why.append("remap cwd")
    if stored != row.rollout_path:
        new["rollout_path"] = stored
        why.append("remap rollout_path")
    can_move = can_move and tid not in choice.stay
    unarchive = can_move and choice.unarchives(tid)
    found = view.at(stored)
    if found is not None and _usable(found[0], inputs, tid) is not None:
        found = None
    move: Optional[MovePlan] = None
    if found is None:
        if not choice.fix_paths and not (unarchive and row.archived):
            return not new or _row_change(plan, out, row.id, tid, _row_values(row), new, why, live, db)
        cands = view.of(tid)
        one = thread_file([c for c, _ in cands])  # the one rule (codexfiles/thread_files.py)
        if one is None:
            n = len(candidates([c for c, _ in cands]))
            return skip(NO_FILE if not n else AMBIGUOUS_FILES.format(n=n))
        problem = _usable(one, inputs, tid)
        if problem:
            return skip(problem)
        rf, final = next(c for c in cands if c[0] is one)
        target = Path(stored)
        if can_move and choice.fix_paths and stored and is_inside(target, root) and _sane_target(target, root) \
                and target.name == Path(rf.row_path).name and not target.exists() \
                and not os.path.lexists(file_path_for(stored, rf)) \
                and _in_archive(str(root))(str(target)) == _in_archive(str(root))(str(final)):
            target = Path(file_path_for(stored, rf))  # a compressed file moves as it is (.zst)
            move = MovePlan(row.id, final, target, "fix path", keep_mtime=True, key=tid)
            final = target
        else:
            if stored and is_inside(target, root) and not _sane_target(target, root):
                why.append("stored path unsafe (outside sessions/, a symlink out, or odd characters)")
            new["rollout_path"] = row_path_of(str(final))  # a row names a compressed file's .jsonl
            why.append("point rollout_path at the real file")
    else:
        rf, final = found  # type: ignore[assignment]  # a str: only ever used as one below
    in_archive = _in_archive(str(root))(str(final))
    if unarchive and (row.archived or in_archive):
        if in_archive:
            dst = unarchived_path(root, rf)
            if dst.exists() and dst != rf.path:
                return skip(f"cannot unarchive: {safe_str(dst)} already exists")
            links = _links(rf.path)
            if links > 1:
                return skip(HARD_LINKED.format(links=links))
            move = MovePlan(row.id, rf.path, dst, "unarchive", keep_mtime=False, key=tid)
            final = dst
        new.update({"archived": 0, "archived_at": None, "rollout_path": row_path_of(str(final)),
                    "updated_at": int(now), "updated_at_ms": int(now * 1000)})
        why.append("unarchive")
    elif bool(row.archived) != in_archive:
        new.update({"archived": int(in_archive), "archived_at": int(now) if in_archive else None,
                    "rollout_path": row_path_of(str(final))})
        why.append(ROW_FOLLOWS_FILE)
    if move is not None:
        if tid in live:
            return skip(LIVE_MOVE)
        if str(move.dst) in taken:
            return skip(f"another thread also wants {safe_str(move.dst)}")
        problem = move_problem(move, root)
        if problem:
            return skip(f"{move.why}: {problem}")
    if new.get("rollout_path") == row.rollout_path:
        del new["rollout_path"]
    if new and not _row_change(plan, out, row.id, tid, _row_values(row), new, why, live, db):
        return False
    if move is not None:
        taken[str(move.dst)] = row.id
        plan.moves.append(move)
    return True


@lru_cache(maxsize=8)
def _in_archive(root: str) -> Callable[[str], bool]:
    """is_inside(path, <root>/archived_sessions), one test made per home (a thousand rows a plan)."""
    return inside_test(os.path.join(root, "archived_sessions"))


def _links(path: Path) -> int:
    try:
        return os.stat(str(path)).st_nlink
    except OSError:
        return 1


def _row_change(plan: RepairPlan, out: List[RowChange], tid: str, key: str, values: Dict[str, Any],
                new: Dict[str, Any], why: List[str], live: set, db: Optional[Path] = None) -> bool:
    """The one path of every planned row change (paths, archive state, names, other DBs): a live
    thread or a value SQLite cannot take skips that thread, with its reason, never the run.
    `tid`: the row's stored id (the SQL's), `key`: its normalised id (every comparison's)."""
    where = f"{safe_str(db)}: " if db is not None else ""
    if key in live:
        plan.skip(tid, key, where + LIVE_ROW)
        return False
    old = {k: values.get(k) for k in new}
    bad = unbindable([tid, *old.values(), *new.values()])
    if bad:
        plan.skip(tid, key, f"{where}row left alone: it holds {bad}")
        return False
    out.append(RowChange(tid, old, new, why, key))
    return True


def _plan_imports(plan: RepairPlan, inputs: AuditInputs, wanted: set, live: set, now: float) -> None:
    row_ids = {r.key for r in inputs.rows}
    provider = inputs.home.config.model_provider
    names = names_from_session_index(inputs.home)  # a re-created row keeps the thread's name
    for tid, files in sorted(inputs.index.by_thread.items()):
        if tid in row_ids or (wanted and tid not in wanted):
            continue
        one = thread_file(files)
        if one is None:
            plan.skip(tid, tid, f"orphan with {len(candidates(files))} files: not imported")
            continue
        rf = one
        reason = classify_orphan(rf, live, now)
        if reason != "importable":
            plan.skip(tid, tid, reason)
            continue
        problem = _usable(rf, inputs, tid)
        if problem:
            plan.skip(tid, tid, f"orphan not imported: {problem}")
            continue
        try:
            ins = row_from_rollout(rf.path, tid, rf.archived, provider)
        except Unimportable as exc:
            plan.skip(tid, tid, f"orphan not imported: {exc}")
            continue
        if tid in names:
            ins["name"] = names[tid]
        if _insert_ok(plan, ins):
            plan.inserts.append(ins)


def _manifest(plan: RepairPlan, ts: str) -> bytes:
    import csv  # the manifest is written only when applying
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
                 extra_ops: Sequence[Op] = (), reset: Sequence[str] = ()) -> Dict[str, Any]:
    """Run the plan's ops through the one executor: moves first, then every row change in one
    transaction; a thread whose move cannot happen keeps its row too. `reset`: threads (normalised
    history keys) whose history rows (in the used DB's history DB) `extra_ops` delete: no other op
    changes those rows first (a growing remap's offset shift would make the deletes miss them)."""
    home = inputs.home
    from datetime import datetime  # only when a report is written
    ts = datetime.now().isoformat(timespec="seconds")
    stamp = time.time() if now is None else now
    ops = remap_ops(inputs, plan, frozenset(reset))
    ops += repair_ops(home.state_db.path, plan, thread_columns_of(home.state_db.path), stamp)
    for other in plan.others:
        ops += other_db_ops(other, thread_columns_of(other.db))
    ops += list(extra_ops) + plan.project_ops
    join_groups(ops, plan.subs)  # a sub-agent's changes go with its parent's: locked, skipped, undone together
    pre = decompress_first(home, ops, force, progress)  # compressed rollouts: decompressed first, own run
    from sessionkit.runlog.writerun import execute  # the executor: loaded only to apply
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
            "links_repointed": [safe_str(link) for link, _o, _n in plan.links] if r.applied["symlink"] else [],
            "history_rows_deleted": r.applied["row_delete"],
            "rows_per_db": {safe_str(db): n for db, n in r.rows.items()},
            "other_db_backups": {safe_str(db): str(b) for db, b in r.backups.items()
                                 if db != str(home.state_db.path) and not db.endswith("thread_history_1.sqlite")},
            "skipped_at_apply": [{"thread_id": t, "reason": why} for t, why in r.skipped],
            "rollback": r.rollback_command(home), "decompression": pre}


def remap_ops(inputs: AuditInputs, plan: RepairPlan, reset: frozenset = frozenset()) -> List[Op]:
    """With --remap-prefix: each remapped thread's rollout as one RolloutRewrite (line 1's `cwd` and
    0.171's `runtime_workspace_roots`, and every `cwd` of the later lines: Codex re-reads them
    and writes a DB-only cwd back), its history offsets shifted in every state DB's history DB
    when it grows; and the home's symlinks into the old home (packages/*/current, without which
    0.171 does not start). Rollouts are rewritten where they lie before any move (ops run in order).
    `reset`: normalised ids whose rows in the used DB's history DB are deleted instead (no shift)."""
    if not plan.remaps:
        return []
    from sessionkit.codexfiles.history_offsets import history_db_path, read_offsets, threads_with_offsets
    root = inputs.home.root
    ops: List[Op] = []
    hists = []
    for n, db in enumerate([inputs.home.state_db.path, *other_state_dbs(inputs.home)]):
        hist = history_db_path(db)
        if hist.is_file():
            conn = open_readonly(hist)
            hists.append((hist, conn, threads_with_offsets(conn), reset if n == 0 else frozenset()))
    try:
        pairs = [[a, b] for a, b in plan.remaps]
        graph = plan.graph
        group = members(graph, [rp.path for rp in plan.rewrites if rp.grows]) if graph is not None else {}
        own = {str(rp.path): RolloutRewrite(rp.thread_id, str(rp.path), dict(rp.set), pairs)
               for rp in plan.rewrites if str(rp.path) in group}
        keys = {str(rp.path): rp.key for rp in plan.rewrites}

        def emit(rw: RolloutEdit, key: str) -> None:
            ops.append(rw)
            for hist, conn, with_offsets, gone in hists:  # re-read under the writer lock when prepared
                if rw.thread_id in with_offsets and key not in gone:
                    ops.append(OffsetShift.following(str(hist), rw, read_offsets(conn, rw.thread_id)))
        for rp in plan.rewrites:
            if str(rp.path) in group:
                continue  # written with the parent it follows
            rw = RolloutRewrite(rp.thread_id, str(rp.path), dict(rp.set), pairs)
            emit(rw, rp.key)
            if graph is not None and rp.grows:
                for link, fork_rw in zip(graph.group(Path(rw.path)), fork_rewrites(graph, rw, own)):
                    emit(fork_rw, keys.get(fork_rw.path, link.fork_id))  # a fork's id: read from its line 1
    finally:
        for _h, conn, _w, _g in hists:
            conn.close()
    pkgs = root / "packages"
    for name in sorted(os.listdir(str(pkgs))) if pkgs.is_dir() and not pkgs.is_symlink() else []:
        link = pkgs / name / "current"  # a broken link (into the old home) is the case to fix
        if not link.is_symlink():
            continue
        target = os.readlink(str(link))
        new_target = remap(target, plan.remaps)
        if new_target != target and os.path.exists(new_target if os.path.isabs(new_target)
                                                   else str(link.parent / new_target)):
            ops.append(SymlinkRepoint(str(link), target, new_target))
    return ops


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
        "forks_moved": plan.forks_moved,
        "decompress_first": compressed_count(r.path for r in plan.rewrites),
        "planned_link_repoints": [{"link": safe_str(a), "from": safe_str(b), "to": safe_str(c)}
                                  for a, b, c in plan.links],
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
