"""What the audit tells a user to run next: only commands whose dry-run would change something.

Each candidate is planned here, in-process, with the planner its script uses, on the inputs the
audit already read: a command that would plan nothing is never printed, so applying the advice in
order converges (the next audit recommends nothing). Sessions nothing can fix are named apart.
Plans are made first for the sessions the audit's samples name (cheap on a big home), and for
every session only when those change nothing.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from sessionkit.codexfiles.reasons import WAIT_REASON  # noqa: F401
from sessionkit.codexfiles.ids import norm_id
from sessionkit.ui.commands import home_command
from sessionkit.ui.labels import shown

if TYPE_CHECKING:  # pragma: no cover - types only
    from sessionkit.codexfiles.home import CodexHome
    from sessionkit.diagnose.snapshot import AuditInputs

# WAIT_REASON: codexfiles/reasons.py
# integrity samples whose sessions the repair may change
REPAIR_SAMPLES = ("missing_rollout_path", "stale_rows", "archive_mismatches", "session_meta_id_mismatch",
                  "rollout_path_outside_home", "duplicate_db_paths", "db_not_on_disk")
_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _thread_of(item: str) -> str:
    """The thread id a report's text names (a sample line, a shown id), normalised where it is read."""
    m = _ID.search(item)
    return norm_id(m.group(0)) if m else item


def _remap_args(report: Dict[str, Any]) -> List[str]:
    moved = (report.get("integrity") or {}).get("moved_home") or None
    arg = str((moved or {}).get("remap_arg", ""))
    return arg.split(" ", 1) if arg.startswith("--remap-prefix ") else []


def _sampled(report: Dict[str, Any], keys: Sequence[str]) -> List[str]:
    integ = report.get("integrity") or {}
    out: List[str] = []
    for key in keys:
        for item in integ.get(f"{key}_sample") or []:
            tid = _thread_of(str(item))
            if _ID.fullmatch(tid) and tid not in out:
                out.append(tid)
    return out


_PLANS: Dict[Tuple[int, Tuple[str, ...], bool, Tuple[str, ...]], Tuple[Any, Any]] = {}


def _repair_plan(inputs: "AuditInputs", remap: List[str], import_orphans: bool,
                 ids: Sequence[str] = ()) -> Any:
    """The repair's dry-run plan as the printed command would make it (archived sessions stay
    archived). With `ids`: those sessions' rows only (no rollout read in full, no other DB), else
    the whole plan. Remembered for this audit (the inputs are kept with it: no id reuse)."""
    from sessionkit.fixes.repair import parse_remaps, plan_repair
    key = (id(inputs), tuple(remap), import_orphans, tuple(ids))
    held = _PLANS.get(key)
    if held is None or held[0] is not inputs:
        if len(_PLANS) > 16:
            _PLANS.clear()
        held = _PLANS[key] = (inputs, plan_repair(inputs, fix_paths=True, unarchive=False,
                                                  remaps=parse_remaps(remap[1:]), thread_ids=list(ids),
                                                  import_orphans=import_orphans, sub=bool(ids)))
    return held[1]


def _changes(plan: Any) -> bool:
    return bool(plan.moves or plan.rows or plan.others or plan.rewrites)


def _sample_plan(inputs: "AuditInputs", report: Dict[str, Any], remap: List[str]) -> Any:
    """One rows-only plan for every session the samples name (repairable, unfixable, orphans)."""
    orphans = [str(e.get("thread_id")) for e in (report.get("orphans") or {}).get("importable_sample") or []]
    ids = sorted(set(_sampled(report, REPAIR_SAMPLES)) | set(orphans))
    return _repair_plan(inputs, remap, bool(orphans), ids) if ids else None


def _repair_changes(inputs: "AuditInputs", report: Dict[str, Any], remap: List[str]) -> bool:
    """Would the repair's dry-run change a row, a file or a link (orphans' rows aside)?"""
    plan = _sample_plan(inputs, report, remap)
    if plan is not None and _changes(plan):
        return True
    return _changes(_repair_plan(inputs, remap, False))


def _orphans_change(inputs: "AuditInputs", report: Dict[str, Any], remap: List[str]) -> bool:
    """Would `--import-orphans` add a row?"""
    plan = _sample_plan(inputs, report, remap)
    if plan is not None and plan.inserts:
        return True
    return bool(_repair_plan(inputs, remap, True).inserts)


def _history_plan(inputs: "AuditInputs") -> Any:
    from sessionkit.diagnose.audit import checked_history
    from sessionkit.fixes.history_reset import plan_history
    return plan_history(inputs, checked_history(inputs), True, ())


FEW = 32


def _migration_changes(inputs: "AuditInputs", integ: Dict[str, Any]) -> bool:
    """Would the migration's dry-run change something? Planned first for a few likely sessions
    (a whole plan reads line 1 of every candidate), then, only if none of them changes, for all."""
    from sessionkit.fixes.migrate import plan_migration
    target = inputs.home.config.model_provider
    likely = [r.id for r in inputs.rows if not r.archived and r.model_provider != target][:FEW]
    likely += [_thread_of(str(x)) for x in integ.get("provider_mismatch_sample") or []][:FEW]
    if likely and plan_migration(inputs, thread_ids=likely).changes:
        return True
    return bool(plan_migration(inputs).changes)


def next_steps(report: Dict[str, Any], home: "CodexHome",
               inputs: Optional["AuditInputs"] = None) -> List[Dict[str, str]]:
    """What to run next, in order: repair, migration, orphan import; each a dry-run that would
    change something. Without `inputs` (a report alone) the counters decide."""
    integ = report.get("integrity") or {}
    vis = report.get("visibility") or {}
    hidden = vis.get("hidden") or {}
    db_only = vis.get("db_only_hidden") or {}
    orph = report.get("orphans") or {}
    remap = _remap_args(report)
    pkg = report.get("daemon_package") or {}
    link = bool(remap and pkg.get("problem") and pkg.get("repoint_to"))
    steps: List[Dict[str, str]] = []
    maybe_repair = bool(integ.get("missing_rollout_path_count", 0) or integ.get("archive_mismatches_count", 0)
                        or integ.get("session_meta_id_mismatch_count", 0) or db_only.get("stale_rollout_path", 0)
                        or remap)
    maybe_history = bool(integ.get("history_incomplete_count", 0) or integ.get("names_lost_count", 0))
    rebuild = ["--rebuild-history"] if integ.get("history_incomplete_count", 0) else []
    why: List[str] = []
    if maybe_repair:
        if inputs is None or _repair_changes(inputs, report, remap):
            why.append("point the index at the real files" + (", remap the old home" if remap else ""))
        elif link:
            why.append("re-point Codex's daemon link")
    if maybe_history:
        hplan = _history_plan(inputs) if inputs is not None else None
        if hplan is None or hplan.resets or hplan.names:
            why.append("rebuild sessions that open incomplete" if rebuild else "restore lost names")
        else:
            rebuild = []
    if why:
        steps.append({"step": "repair", "why": ", ".join(why),
                      "command": home_command(home, "session_repair.py", *remap, *rebuild)})
    if hidden.get("other_provider", 0) or integ.get("provider_mismatch_count", 0):
        if inputs is None or _migration_changes(inputs, integ):
            steps.append({"step": "migrate", "why": f"move sessions of other providers to {shown(vis.get('provider'))}",
                          "command": home_command(home, "provider_migrate.py")})
    if orph.get("importable", 0):
        if inputs is None or _orphans_change(inputs, report, remap):
            steps.append({"step": "import", "why": "add index entries for session files that have none",
                          "command": home_command(home, "session_repair.py", *remap, "--import-orphans")})
    return as_one_run(steps, home, remap, rebuild)


def as_one_run(steps: List[Dict[str, str]], home: "CodexHome", remap: List[str],
               rebuild: List[str]) -> List[Dict[str, str]]:
    """The steps above as one `session_recover.py` run (one journal, one undo); the separate
    scripts stay for one step at a time. Archived sessions are never added: that is an option."""
    if not steps:
        return steps
    why = steps[0]["why"] if len(steps) == 1 else \
        "every fix in one run, one undo (" + ", ".join(s["step"] for s in steps) + ")"
    return [{"step": "recover", "why": why, "parts": ", ".join(s["step"] for s in steps),
             "command": home_command(home, "session_recover.py", *remap, *rebuild)}]


def unarchive_option(report: Dict[str, Any], home: "CodexHome") -> Optional[Dict[str, str]]:
    """Archived sessions are the user's choice: bringing them back is offered, never recommended."""
    n = ((report.get("visibility") or {}).get("hidden") or {}).get("archived", 0)
    if not n:
        return None
    return {"step": "unarchive", "why": f"only if you want the {n} archived session{'s' if n != 1 else ''} "
                                        "back in the list",
            "command": home_command(home, "session_repair.py", "--unarchive")}


def unfixable(report: Dict[str, Any], inputs: "AuditInputs", named: int = 2) -> List[Dict[str, Any]]:
    """Sessions no command here can bring back, grouped by reason: `reason`, `count`, `thread_ids`
    (a sample) and `sessions` (the first few labels): what the repair's plan skips (no file
    anywhere...), session files whose line 1 is unreadable, files still being written."""
    from sessionkit.ui.labels import session_names
    integ = report.get("integrity") or {}
    orph = report.get("orphans") or {}
    groups: Dict[str, Dict[str, Any]] = {}

    seen: set = set()

    def add(reason: str, tid: str, total: int = 0) -> None:
        if tid in seen:  # one reason per session: the first (the repair's own words)
            return
        seen.add(tid)
        g = groups.setdefault(reason, {"reason": reason, "count": 0, "thread_ids": []})
        g["thread_ids"].append(tid)
        g["count"] = max(total, len(g["thread_ids"]))

    gone = _sampled(report, ("db_not_on_disk",))
    stuck = set(_sampled(report, ("missing_rollout_path", "db_not_on_disk")))
    plan = _sample_plan(inputs, report, _remap_args(report)) if stuck else None
    for tid, reason in plan.skipped if plan is not None else []:
        key = _thread_of(str(tid))  # shown as the row holds it
        if key in stuck:
            add(str(reason), key, integ.get("db_not_on_disk_count", 0) if key in gone else 0)
    unreadable = [str(item).partition(": ") for item in integ.get("line1_unreadable_sample") or []]
    one_reason = len({why for _t, _s, why in unreadable}) == 1  # else each reason counts its own sessions
    for tid, _sep, why in unreadable:
        add(f"first line unreadable: {why or 'corrupt'}", _thread_of(tid),
            integ.get("line1_unreadable_count", 0) if one_reason else 0)
    for e in orph.get("active_orphan_sample") or []:
        add(WAIT_REASON, str(e.get("thread_id")), orph.get("active_orphans", 0))  # an orphan: the walk's id
    hidden = ((report.get("visibility") or {}).get("hidden") or {}).get("other_provider", 0)
    linked = any(rf.linked_root for rf in inputs.index.files)
    if hidden and linked:  # sessions of another provider in a symlinked sessions/: read, never written
        from sessionkit.codexfiles.rollout_index import LINKED_ROOT
        from sessionkit.fixes.migrate import plan_migration
        target = inputs.home.config.model_provider
        likely = [r.id for r in inputs.rows if not r.archived and r.model_provider != target][:FEW]
        for tid, reason in plan_migration(inputs, thread_ids=likely).skipped if likely else []:
            if reason == LINKED_ROOT:
                add(str(reason), _thread_of(str(tid)), hidden)
    out = list(groups.values())
    labels = session_names(inputs, [t for g in out for t in g["thread_ids"][:named]])
    for g in out:
        g["sessions"] = [labels.get(t, t) for t in g["thread_ids"][:named]]
    return out
