"""What each recorded run changed, where it stands and what it weighs; removing old runs' artifacts."""
from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

from sessionkit import UserError
from sessionkit.runlog.artifacts import list_runs
from sessionkit.codexfiles.home import CodexHome
from sessionkit.codexfiles.paths import is_inside, safe_str
from sessionkit.runlog.safety import HomeLock, check_folders_inside
from sessionkit.runlog.runstate import APPLIED, run_state
from sessionkit.runlog.restore import RESTORE_TAG
from sessionkit.runlog.undo import Run, read_run, run_kind


def folder_size(path: Path) -> int:
    """Bytes on disk of the files under a run folder (links not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(str(path)):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def readable_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _state(run: Run, newest_applied: Optional[Path]) -> str:
    """`status` and what to know or do next: the one wording of runstate."""
    return run_state(run).state(newest=run.path == newest_applied)


def changed_files(ops: List[Any]) -> Set[str]:
    """The files a run changed, each once where it lies now: a file rewritten and then moved by the
    same run (remap, then unarchive) is one file."""
    moved: Dict[str, str] = {}
    out: Set[str] = set()
    for o in reversed(ops):
        out.update(moved.get(f, f) for f in o.files())
        rel = o.relocation()
        if rel is not None:
            moved[rel[0]] = moved.get(rel[1], rel[1])
    return out


def run_details(run: Run, newest_applied: Optional[Path] = None) -> Dict[str, Any]:
    """Counts of what one run changed, each op asked what it counts as and which files it changed."""
    threads = {o.thread_id for o in run.ops if o.thread_id}
    files = changed_files(run.ops)
    providers: Counter = Counter()
    counts: Counter = Counter(o.COUNTS.listed for o in run.ops if o.COUNTS.listed)
    for o in run.ops:
        change = o.value_change("model_provider")
        if change is not None:
            providers[f"{change[0]} -> {change[1]}"] += 1
    return {
        "run_dir": safe_str(run.path), "kind": run.begin.get("kind", run_kind(run.path)), "started": run.begin.get("ts"),
        "changes": run.begin.get("changes"), "status": run.status, "state": _state(run, newest_applied),
        "newest": run.path == newest_applied,
        "applied": run.applied and run.complete,
        "threads": len(threads), "files": len(files),
        **{k: counts.get(k, 0) for k in LISTED}, "other_changes": {k: v for k, v in counts.items() if k not in LISTED},
        "providers": dict(providers), "manifest": run.manifest,
        "state_key": run_state(run).key, "left_alone": list(run.left), "left_deleted": list(run.deleted),
        "restores": [dict(r) for r in run.restores],
        "size_bytes": folder_size(run.path),
        "began": run.began, "complete": run.complete, "undone": run.undone,
        "only_copies": only_copies(run), "needed_by": [],
    }


def only_copies(run: Run) -> List[str]:
    """Files in a run folder that are the only copy of something: the DB as it was before each
    `--restore-db` (what that restore replaced, kept nowhere else)."""
    saved = {os.path.realpath(str(r.get("saved", ""))) for r in run.restores}
    try:
        names = sorted(os.listdir(str(run.path)))
    except OSError:
        names = []
    out = []
    for name in names:
        path = os.path.join(str(run.path), name)
        if (f".{RESTORE_TAG}_" in name or os.path.realpath(path) in saved) and os.path.isfile(path):
            out.append(safe_str(path))
    return out


LISTED = ("moves", "line1_rewrites", "row_updates", "row_inserts")  # always shown, 0 included


def list_details(home: CodexHome) -> List[Dict[str, Any]]:
    """Every recorded run, oldest first, with what it changed; an unreadable one says why."""
    runs: List[Any] = []
    for path in list_runs(home.artifacts_dir):
        try:
            runs.append(read_run(path))
        except UserError as exc:
            runs.append((path, str(exc)))
    applied = [r.path for r in runs if isinstance(r, Run) and r.applied and r.complete]
    newest = applied[-1] if applied else None
    needed = needed_by([r for r in runs if isinstance(r, Run)])
    out = []
    for r in runs:
        if isinstance(r, Run):
            out.append({**run_details(r, newest), "needed_by": needed.get(r.path, [])})
        else:
            out.append({"run_dir": safe_str(r[0]), "kind": "?", "started": None, "status": f"unreadable ({r[1]})",
                        "state": "unreadable", "state_key": "unreadable", "applied": False, "newest": False,
                        "size_bytes": folder_size(r[0])})
    return out


def needed_by(runs: List[Run]) -> Dict[Path, List[str]]:
    """Per run, the later runs still applied that changed a thread (or file) it changed: undoing
    those leads back to this one (a migration after the decompression it made first), so this run
    goes only with them."""
    out: Dict[Path, List[str]] = {}
    touched = [r.touches() if r.applied else set() for r in runs]
    for i, r in enumerate(runs):
        if not r.applied:
            continue  # a run already undone leaves nothing a later undo leads back to
        mine = r.touches()
        out[r.path] = [safe_str(later.path) for later, theirs in zip(runs[i + 1:], touched[i + 1:]) if mine & theirs]
    return out


def keep_reason(d: Dict[str, Any], include_newest: bool) -> Optional[str]:
    """Why --prune keeps this run on its own account (None: it may go): an incomplete or unreadable
    run always; the newest applied run, a partly rolled back one and one that holds the only copy
    of something unless forced."""
    if d.get("began") is None:
        return "its journal cannot be read: kept as it is"
    if not d["began"] or d["undone"] in ("rollback", "failure"):
        pass
    elif d["undone"] == "partial":
        if not include_newest:
            return "partly rolled back: rollback.py still needs it (--force removes it too)"
    elif not d["complete"]:
        return "incomplete: rollback.py still needs it"
    elif d.get("newest") and not include_newest:
        return "the newest applied run (--force removes it too)"
    if d.get("only_copies") and not include_newest:
        return (f"it holds the only copy of the DB as it was before a --restore-db "
                f"({', '.join(d['only_copies'])}; --force removes it too)")
    return None


def prune_candidates(details: List[Dict[str, Any]], include_newest: bool) -> List[Dict[str, Any]]:
    """Runs whose artifacts may go: rolled back, failed, stopped before any change, and applied ones older than the newest
    applied run (which stays unless asked for); never an incomplete run (rollback still needs it), never
    one a run that stays builds on, never the only copy of something without --force."""
    why = prune_verdict(details, include_newest)
    return [d for d in details if why.get(d["run_dir"]) is None]


def prune_verdict(details: List[Dict[str, Any]], include_newest: bool) -> Dict[str, Optional[str]]:
    """Per run folder, why --prune keeps it, or None when it goes."""
    why = {d["run_dir"]: keep_reason(d, include_newest) for d in details}
    changed = True
    while changed:  # a run stays while a later run that builds on it stays
        changed = False
        for d in details:
            if why[d["run_dir"]] is None:
                stays = [n for n in d.get("needed_by") or [] if why.get(n) is not None]
                if stays:
                    why[d["run_dir"]] = f"the later run {stays[0]} builds on it (roll that back first)"
                    changed = True
    return why


def prune(home: CodexHome, runs: List[Dict[str, Any]], include_newest: bool = False) -> int:
    """Remove these run folders (under the home's artifacts folder only, under the home lock), each
    only if it is still a candidate when the lock is held: a run that began meanwhile is kept."""
    freed = 0
    check_folders_inside(home, *(Path(d["run_dir"]) for d in runs))  # never rmtree through a symlink out
    with HomeLock(home):
        still = {d["run_dir"] for d in prune_candidates(list_details(home), include_newest)}
        for d in runs:
            if d["run_dir"] not in still:
                continue
            path = Path(d["run_dir"])
            if path.is_symlink() or not is_inside(path, home.artifacts_dir) or path == home.artifacts_dir:
                raise UserError(f"refusing to remove {path}: not a run folder inside {home.artifacts_dir}")
            freed += folder_size(path)
            shutil.rmtree(str(path))
    return freed


def older_runs(home: CodexHome, this_run: Optional[str] = None) -> List[str]:
    """Runs recorded in this home that are still applied, other than `this_run`: "kind, started"."""
    try:
        details = list_details(home)
    except Exception:  # noqa: BLE001 - an unreadable run is rollback.py --list's to explain
        return []
    out = []
    for d in details:
        if str(d.get("run_dir")) == str(this_run or ""):
            continue
        if d.get("applied") or d.get("state_key") == APPLIED:
            out.append(f"{d.get('kind', '?')}, {d.get('started') or '?'}")
    return out
