"""Plan the history repair: which threads' stored history to reset (its rows in the four history
tables, for its active rollout's key), which to have Codex rebuild, and which names to restore."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sessionkit.codexfiles.reasons import LIVE_HISTORY, LIVE_NAME
from sessionkit.codexfiles.ids import norm_id
from sessionkit.codexfiles.record import Record
from sessionkit.diagnose.history_check import RESET_KINDS, Finding, HistoryCheck
from sessionkit.codexfiles.paths import safe_str
from sessionkit.codexfiles.statedb import open_readonly


class HistoryPlan(Record):
    """The history repair planned: resets, rebuilds and names, before anything is written."""
    __slots__ = ("resets", "rebuild", "names", "forks", "skipped", "enabled", "keys")

    def __init__(self, enabled: bool = True, rebuild: Optional[List[str]] = None) -> None:
        self.resets: List[Finding] = []  # rows to delete, by history key
        self.rebuild: List[str] = list(rebuild or [])  # thread ids Codex resumes once (resets and not-built)
        self.names: List[Tuple[str, str]] = []  # (thread id, name) for rows that have none
        self.forks: Dict[str, List[str]] = {}  # thread id -> forks that read its rows
        self.skipped: List[Tuple[str, str]] = []
        self.enabled = enabled
        self.keys: Dict[str, str] = {}  # a rebuilt thread's stored id -> its normalised id

    def key(self, tid: str) -> str:
        """The normalised id of a thread this plan names by its stored id (an id it does not know is one)."""
        return self.keys.get(tid, tid)


def _forks_by_parent(inputs: Any) -> Dict[str, List[str]]:
    """Forks read their parent's rows up to `history_base`: they come back when the parent does."""
    out: Dict[str, List[str]] = {}
    for rf in inputs.index.files:
        meta = inputs.metas.get(rf.key)
        parent = getattr(meta, "parent_key", None)
        if parent:
            out.setdefault(parent, []).append(rf.thread_id)
    return out


def plan_history(inputs: Any, check: HistoryCheck, enabled: bool = True,
                 thread_ids: Sequence[str] = ()) -> HistoryPlan:
    """Resets for every damaged active key of a thread no Codex holds; older segments of reverted
    threads are reported, not reset (Codex rebuilds them only when that segment is resumed).
    `thread_ids`: normalised (command-line arguments)."""
    plan = HistoryPlan(enabled=enabled)
    wanted = set(thread_ids)
    forks = _forks_by_parent(inputs)
    key_of = {r.id: r.key for r in inputs.rows}  # the check names rows by their stored ids
    seen = set()
    for f in check.findings:
        tid = f.thread_key
        if wanted and tid not in wanted:
            continue
        if not enabled:
            continue
        if f.segment:
            plan.skipped.append((f.thread_id, f"older segment {safe_str(f.rollout)} of a reverted thread has "
                                 f"incomplete history ({f.kind}): Codex rebuilds it only when that segment "
                                 f"is resumed, which no app-server call can ask for; left as is"))
            continue
        if f.kind in RESET_KINDS:
            plan.resets.append(f)
        if tid not in seen:
            seen.add(tid)
            plan.rebuild.append(f.thread_id)
            plan.keys[f.thread_id] = tid
            if forks.get(tid):
                plan.forks[f.thread_id] = sorted(forks[tid])
    for tid in check.skipped_live:
        if wanted and key_of.get(tid, tid) not in wanted:
            continue
        plan.skipped.append((tid, LIVE_HISTORY))
    live = set(inputs.activity.live_threads)
    for tid, name in check.names_lost.items():
        key = key_of.get(tid, tid)
        if wanted and key not in wanted:
            continue
        if key in live:
            plan.skipped.append((tid, LIVE_NAME))
        else:
            plan.names.append((tid, name))
    return plan


def history_plan_report(plan: HistoryPlan, sample: int, rebuild: bool) -> Dict[str, Any]:
    """The repair report's history fields; says how each reset thread comes back."""
    return {
        "history_fix_enabled": plan.enabled,
        "planned_history_resets": len(plan.resets),
        "planned_history_rebuilds": len(plan.rebuild) if rebuild else 0,
        "history_resets_sample": [f.as_dict() for f in plan.resets[:sample]],
        "history_forks_come_back_with_parent": {k: v for k, v in list(plan.forks.items())[:sample]},
        "history_skipped": [{"thread_id": t, "reason": r} for t, r in plan.skipped[:sample]],
        "planned_name_restores": len(plan.names),
        "name_restores_sample": [{"thread_id": t, "name": safe_str(n)} for t, n in plan.names[:sample]],
        "history_comes_back": ("rebuilt now by your Codex (thread/resume, excludeTurns)" if rebuild else
                               "the first time each thread is opened (resumed) in Codex; until then it reads "
                               "0 turns. --rebuild-history rebuilds them all now") if plan.rebuild else None,
    }


def rebuild_after(home: Any, plan: HistoryPlan, result: Optional[Dict[str, Any]], codex: str) -> Dict[str, Any]:
    """After the apply: Codex resumes each reset (or never built) thread once, except those the
    apply skipped (an op carries a row's stored id or a walk's normalised one: plan.key maps both);
    the report names every thread that was not rebuilt and why."""
    from sessionkit.fixes.codex_rebuild import INTERRUPTED, rebuild_histories
    try:  # a Ctrl-C anywhere here: the apply stands, its result and undo are still said (exit 1)
        skipped = {plan.key(str(s.get("thread_id"))) for s in (result or {}).get("skipped_at_apply") or []}
        archived = archived_ids(home.state_db.path)
        todo = [t for t in plan.rebuild if plan.key(t) not in skipped and plan.key(t) not in archived]
        sqlite_home = home.state_db.path.parent
        done, failed = rebuild_histories(home.root, todo, codex, None if sqlite_home == home.root else sqlite_home,
                                         plan.keys)
    except KeyboardInterrupt:
        return interrupted_rebuild(plan, codex)
    interrupted = any(why == INTERRUPTED for _t, why in failed)
    failed += [(t, "archived: Codex resumes only active threads (measured on 0.171); its history comes back "
                   "when it is unarchived and opened") for t in plan.rebuild if plan.key(t) in archived]
    return {"codex_bin": safe_str(codex), "rebuilt": len(done), "rebuilt_sample": done[:10],
            "failed": [{"thread_id": t, "reason": r} for t, r in failed], "interrupted": interrupted}


def interrupted_rebuild(plan: HistoryPlan, codex: str) -> Dict[str, Any]:
    """The rebuild report of a Ctrl-C outside the app-server's loop: nothing known rebuilt."""
    from sessionkit.fixes.codex_rebuild import INTERRUPTED
    return {"codex_bin": safe_str(codex), "rebuilt": 0, "rebuilt_sample": [],
            "failed": [{"thread_id": t, "reason": INTERRUPTED} for t in plan.rebuild], "interrupted": True}


def history_lines(r: Dict[str, Any], names: Optional[Dict[str, str]] = None) -> List[str]:
    """The history part of the repair's text report, each session by its label (name, else title,
    date, folder: `names`) as everywhere else, its id when it has none."""
    names = names or {}

    def n(tid: str) -> str:
        return names.get(tid, tid)
    out = [f"{k}: {r[k]}" for k in ("history_fix_enabled", "planned_history_resets",
                                     "planned_history_rebuilds", "planned_name_restores")]
    out += [f"  reset history of {n(f['thread_id'])} ({f['kind']})" for f in r["history_resets_sample"]]
    for parent, forks in r["history_forks_come_back_with_parent"].items():
        out.append(f"  forks of {n(parent)} read its history and come back with it: {', '.join(n(f) for f in forks)}")
    out += [f"  restore name of {n(x['thread_id'])}: {x['name']!r}" for x in r["name_restores_sample"]]
    out += [f"  history skipped {n(s['thread_id'])}: {s['reason']}" for s in r["history_skipped"]]
    if r.get("history_comes_back"):
        out.append(f"history comes back: {r['history_comes_back']}")
    for tid in r.get("history_reset_instead_of_shift") or []:
        out.append(f"  {n(tid)}: its history is reset, so the remap's offset shift is not needed")
    rb = r.get("history_rebuild")
    if rb:
        out.append(f"history_rebuilt: {rb['rebuilt']} (by {rb['codex_bin']})")
        out += [f"  not rebuilt {n(f['thread_id'])}: {f['reason']}" for f in rb["failed"]]
    return out


def reset_and_remapped(repair: Any, plan: HistoryPlan) -> List[str]:
    """Threads whose history is reset and whose rollout a remap grows in the same run: their rows are
    deleted, not shifted (the reset goes first; Codex rebuilds them from the rewritten file)."""
    keys = {f.key for f in plan.resets}  # normalised where the check read them
    return [r.thread_id for r in repair.rewrites if r.grows and r.key in keys]


# The order of the deletes: the cursor last, since deleting it fires Codex's trigger that deletes
# the key's realtime items (by then already deleted, each recorded whole).
RESET_ORDER = ("thread_items", "thread_turns", "thread_realtime_items", "thread_history_projection_state")
_CHUNK = 500


def history_ops(hist_db: Path, plan: HistoryPlan) -> List[Any]:
    """Every row of each reset key in the four history tables, whole, as RowDelete operations for
    the one executor (so the journal keeps each row and rollback puts it back exactly)."""
    from sessionkit.runlog.ops import RowDelete
    if not plan.resets:
        return []
    owner = {f.key: f.thread_id for f in plan.resets}
    keys = list(owner)
    ops: List[Any] = []
    conn = open_readonly(hist_db)
    try:
        for table in RESET_ORDER:
            info = list(conn.execute(f'PRAGMA table_info("{table}")'))
            cols = [r[1] for r in info]
            pk = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])] or ["thread_id"]
            for at in range(0, len(keys), _CHUNK):
                chunk = keys[at:at + _CHUNK]
                sql = f'SELECT * FROM "{table}" WHERE thread_id IN ({", ".join("?" * len(chunk))}) ORDER BY rowid'
                for values in conn.execute(sql, chunk):
                    row = dict(zip(cols, values))
                    ops.append(RowDelete(str(hist_db), table, row, {k: row[k] for k in pk},
                                         owner.get(norm_id(str(row["thread_id"])), str(row["thread_id"]))))  # read
    finally:
        conn.close()
    return ops


def archived_ids(state_db: Path) -> set:
    """Threads archived now (after the apply, which may have unarchived some): read here, normalised."""
    conn = open_readonly(state_db)
    try:
        return {norm_id(str(t)) for (t,) in conn.execute("SELECT id FROM threads WHERE archived<>0")}
    finally:
        conn.close()
