"""What the audit tells a user to run next: only commands whose dry-run would change something.

Each candidate is planned here, in-process, with the planner its script uses, on the inputs the
audit already read: a command that would plan nothing is never printed, so applying the advice in
order converges (the next audit recommends nothing). Sessions nothing can fix are named apart.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from .commands import home_command

if TYPE_CHECKING:  # pragma: no cover - types only
    from .home import CodexHome
    from .snapshot import AuditInputs


def _remap_args(report: Dict[str, Any]) -> List[str]:
    moved = (report.get("integrity") or {}).get("moved_home") or None
    arg = str((moved or {}).get("remap_arg", ""))
    return arg.split(" ", 1) if arg.startswith("--remap-prefix ") else []


_PLANS: Dict[Tuple[int, Tuple[str, ...], bool, bool], Tuple[Any, Any]] = {}


def _repair_plan(inputs: "AuditInputs", remap: List[str], import_orphans: bool, full: bool = False) -> Any:
    """The repair's dry-run plan, as the printed command would make it (archived sessions stay
    archived). First the rows only (`sub`: no rollout read in full, no other DB): enough whenever
    a row changes; the whole plan only when that says nothing. Remembered for this audit."""
    from .repair import parse_remaps, plan_repair
    key = (id(inputs), tuple(remap), import_orphans, full)
    held = _PLANS.get(key)
    if held is None or held[0] is not inputs:  # the inputs are kept with their plan: no id reuse
        if len(_PLANS) > 16:
            _PLANS.clear()
        held = _PLANS[key] = (inputs, plan_repair(inputs, fix_paths=True, unarchive=False,
                                                  remaps=parse_remaps(remap[1:]),
                                                  import_orphans=import_orphans, sub=not full))
    return held[1]


def _repair_changes(inputs: "AuditInputs", remap: List[str], import_orphans: bool) -> Any:
    """A plan that changes something, else None: the rows-only plan, then (only if it is empty) the whole one."""
    for full in (False, True):
        plan = _repair_plan(inputs, remap, import_orphans, full)
        if plan.moves or plan.rows or plan.inserts or plan.others or plan.rewrites:
            return plan
    return None


def _history_plan(inputs: "AuditInputs") -> Any:
    from .history_check import check_history
    from .history_reset import plan_history
    return plan_history(inputs, check_history(inputs), True, ())


def next_steps(report: Dict[str, Any], home: "CodexHome",
               inputs: Optional["AuditInputs"] = None) -> List[Dict[str, str]]:
    """What to run next, in order: repair, migration, orphan import; each a dry-run that would
    change something. Without `inputs` (a report alone) the counters decide, as before."""
    integ = report.get("integrity") or {}
    vis = report.get("visibility") or {}
    hidden = vis.get("hidden") or {}
    db_only = vis.get("db_only_hidden") or {}
    orph = report.get("orphans") or {}
    remap = _remap_args(report)
    pkg = report.get("daemon_package") or {}
    steps: List[Dict[str, str]] = []
    maybe_repair = bool(integ.get("missing_rollout_path_count", 0) or integ.get("archive_mismatches_count", 0)
                        or integ.get("session_meta_id_mismatch_count", 0) or db_only.get("stale_rollout_path", 0)
                        or remap or (pkg.get("problem") and pkg.get("repoint_to")))
    maybe_history = bool(integ.get("history_incomplete_count", 0) or integ.get("names_lost_count", 0))
    rebuild = ["--rebuild-history"] if integ.get("history_incomplete_count", 0) else []
    why: List[str] = []
    if maybe_repair:
        if inputs is None or _repair_changes(inputs, remap, False) is not None:
            why.append("point the index at the real files" + (", remap the old home" if remap else ""))
        elif remap and pkg.get("problem") and pkg.get("repoint_to"):
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
        mplan = None
        if inputs is not None:
            from .migrate import plan_migration
            mplan = plan_migration(inputs)
        if mplan is None or mplan.changes:
            steps.append({"step": "migrate", "why": f"move sessions of other providers to {vis.get('provider')}",
                          "command": home_command(home, "provider_migrate.py")})
    if orph.get("importable", 0):
        if inputs is None or _repair_plan(inputs, remap, True).inserts:
            steps.append({"step": "import", "why": "add index entries for session files that have none",
                          "command": home_command(home, "session_repair.py", *remap, "--import-orphans")})
    return steps


def unarchive_option(report: Dict[str, Any], home: "CodexHome") -> Optional[Dict[str, str]]:
    """Archived sessions are the user's choice: bringing them back is offered, never recommended."""
    n = ((report.get("visibility") or {}).get("hidden") or {}).get("archived", 0)
    if not n:
        return None
    return {"step": "unarchive", "why": f"only if you want the {n} archived session{'s' if n != 1 else ''} "
                                        "back in the list",
            "command": home_command(home, "session_repair.py", "--unarchive")}


def unfixable(report: Dict[str, Any], inputs: "AuditInputs", limit: int = 10) -> List[Dict[str, str]]:
    """Sessions no command here can bring back, each with its reason: what the repair's plan skips,
    session files whose first line is unreadable, and files still being written (audit again later)."""
    from .labels import session_names
    out: List[Tuple[str, str]] = []
    integ = report.get("integrity") or {}
    if integ.get("db_not_on_disk_count", 0) or integ.get("missing_rollout_path_count", 0):
        plan = _repair_plan(inputs, _remap_args(report), False)
        out += [(tid, reason) for tid, reason in plan.skipped]
    for item in integ.get("line1_unreadable_sample") or []:
        tid, _sep, why = str(item).partition(": ")
        out.append((_thread_of(tid), f"its first line is unreadable ({why or 'corrupt'}); Codex lists none of those"))
    orph = report.get("orphans") or {}
    for e in orph.get("active_orphan_sample") or []:
        out.append((str(e.get("thread_id")), WAIT_REASON))
    seen: Dict[str, str] = {}
    for tid, reason in out:
        seen.setdefault(tid, reason)
    names = session_names(inputs, list(seen)[:limit])
    return [{"thread_id": tid, "session": names.get(tid, tid), "reason": reason}
            for tid, reason in list(seen.items())[:limit]]


WAIT_REASON = "written in the last minutes, maybe still in use: audit again later"


def _thread_of(item: str) -> str:
    m = _ID.search(item)
    return m.group(0).lower() if m else item


_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
