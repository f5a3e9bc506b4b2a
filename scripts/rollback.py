#!/usr/bin/env python3
"""Undo a provider migration or a repair run from its journal, exactly; or put a DB backup back.

Dry-run by default. Only values that still hold what the run wrote are restored; anything changed
since is reported and left alone. Running it twice changes nothing the second time.
"""
from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.dont_write_bytecode = True  # no __pycache__ inside the Codex home (the skill lives there)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sessionkit import EXIT_CLEAN, EXIT_FINDINGS, Lines  # noqa: E402
from sessionkit.ui.cli import Parser, add_home_args, emit, existing_path_arg, positive_int, print_json, run  # noqa: E402
from sessionkit.ui.labels import names_from_db, run_kind_words, shown  # noqa: E402
from sessionkit.ui.results import Outcome, labels_for, wrap  # noqa: E402
from sessionkit.ui.results import render as render_outcome  # noqa: E402
from sessionkit.ui.commands import home_command, quote  # noqa: E402
from sessionkit.runlog.runs import list_details, older_runs, prune, prune_candidates, prune_verdict, readable_size  # noqa: E402
from sessionkit import UserError  # noqa: E402
from sessionkit.codexfiles.home import open_home  # noqa: E402
from sessionkit.codexfiles.paths import safe_str, user_path  # noqa: E402
from sessionkit.codexfiles.locks import scan_activity  # noqa: E402
from sessionkit.ui.progress import Progress  # noqa: E402
from sessionkit.runlog.safety import HomeLock, check_folders_inside, check_writable, refuse_if_running  # noqa: E402
from sessionkit.codexfiles.statedb import settle_hot_journal  # noqa: E402
from sessionkit.runlog.scope import home_dbs  # noqa: E402
from sessionkit.runlog.restore import check_restore, restore_db  # noqa: E402
from sessionkit.runlog.undo import Run, apply_undo, backups_ahead, find_run, later_dependents, plan_undo, read_run, runs_until, summary  # noqa: E402
from sessionkit.runlog.runstate import APPLIED, left_by_fork, run_state  # noqa: E402
from sessionkit.runlog.artifacts import list_runs  # noqa: E402


def parse_args(argv: Optional[List[str]]) -> Any:
    p = Parser(prog="rollback.py", description=(
        "List past runs of provider_migrate.py and session_repair.py, and undo one. "
        "Dry-run unless --apply."))
    add_home_args(p)
    which = p.add_mutually_exclusive_group()  # one mode per command: --prune --latest never prunes instead
    which.add_argument("--list", action="store_true",
                       help="list recorded runs: what each changed, applied or rolled back, size on disk.")
    which.add_argument("--prune", action="store_true",
                       help="remove the artifacts of runs no longer needed: rolled back or failed ones and applied "
                            "ones older than the newest applied run (dry-run unless --apply; --force includes "
                            "the newest applied run too). Incomplete runs are always kept.")
    which.add_argument("--latest", action="store_true", help="undo the most recent run.")
    which.add_argument("--manifest", metavar="PATH", type=existing_path_arg,
                       help="undo the run of this manifest CSV (or its run folder / journal).")
    which.add_argument("--until", metavar="RUN", type=existing_path_arg,
                       help="undo every applied run newer than and including this run folder, newest first; "
                            "stops at the first that cannot be undone whole.")
    which.add_argument("--restore-db", metavar="BACKUP", type=existing_path_arg,
                       help="put this whole DB backup back (the current DB is backed up first).")
    p.add_argument("--apply", action="store_true", help="write (default: show what would be undone).")
    p.add_argument("--force", action="store_true", help="apply even though Codex seems to be running.")
    p.add_argument("--sample", "--max-samples", dest="sample", type=positive_int, default=10, metavar="N", help="items shown (default: 10).")
    p.add_argument("--verbose", action="store_true", help="also print the raw counters of the plan and the result.")
    return p.parse_args(argv)


def describe(d: Dict[str, Any]) -> str:
    """What one run changed, in a few words."""
    def n(count: int, one: str, many: str) -> str:
        return f"{count} {one if count == 1 else many}"
    parts = [n(d["threads"], "session", "sessions")] if d.get("threads") is not None else []
    if d.get("moves"):
        parts.append(n(d["moves"], "file moved", "files moved"))
    if d.get("line1_rewrites"):
        parts.append(n(d["line1_rewrites"], "first line rewritten", "first lines rewritten"))
    if d.get("row_updates"):
        parts.append(n(d["row_updates"], "index entry updated", "index entries updated"))
    if d.get("row_inserts"):
        parts.append(n(d["row_inserts"], "index entry added", "index entries added"))
    parts += [f"provider {k}: {v}" for k, v in (d.get("providers") or {}).items()]
    return ", ".join(parts)


def render_runs(home: Any, runs: List[Dict[str, Any]]) -> str:
    out = [f"runs recorded under {home.artifacts_dir}: {len(runs)}"
           + (f", {readable_size(sum(r['size_bytes'] for r in runs))} on disk" if runs else "")]
    for r in runs:
        out += [f"  {r['started'] or '?'}  {r['kind']}  {r['state']}  {readable_size(r['size_bytes'])}",
                f"      {describe(r)}" if r.get("threads") is not None else f"      {r['status']}",
                f"      {r['run_dir']}"]
    if any(r.get("applied") for r in runs):
        out += ["preview undoing the newest applied run (then add --apply):",
                "  " + home_command(home, "rollback.py", "--latest")]
    if prune_candidates(runs, include_newest=False):
        out += ["preview removing the artifacts of runs no longer needed:",
                "  " + home_command(home, "rollback.py", "--prune")]
    return Lines(out)


def prune_runs(home: Any, args: Any) -> int:
    """--prune: show (or with --apply remove) the run folders no longer needed."""
    runs = list_details(home)
    why = prune_verdict(runs, include_newest=args.force)
    gone = [d for d in runs if why.get(d["run_dir"]) is None]
    freed = prune(home, gone, include_newest=args.force) if args.apply and gone else 0
    if args.json:
        print_json({"codex_dir": str(home.root), "dry_run": not args.apply, "prune": gone, "freed_bytes": freed})
        return EXIT_CLEAN
    size = readable_size(sum(d["size_bytes"] for d in gone))
    emit(f"{'removed' if args.apply else 'would remove'} {len(gone)} run folder(s), {size}:")
    for d in gone:
        note = " (its changes stay; it can no longer be undone)" if d["applied"] else ""
        emit(f"  {d['started'] or '?'}  {d['kind']}  {d['state']}{note}")
        emit(f"      {d['run_dir']}")
        for f in d.get("only_copies") or []:  # never removed unnamed
            emit(f"      with the only copy of the DB as it was before a --restore-db: {f}")
    for d in runs:
        if why.get(d["run_dir"]) is not None:
            emit(f"  kept {d['started'] or '?'}  {d['kind']}: {why[d['run_dir']]}")
    if gone and not args.apply:
        emit("remove them with:")
        emit("  " + home_command(home, "rollback.py", "--prune", *(["--force"] if args.force else []), "--apply"))
    return EXIT_CLEAN


def left_notes(home: Any, plan: Any) -> List[str]:
    """Why the run stays partly rolled back, per reason of what is left, and what would finish it."""
    forked = sum(1 for c in plan.conflicts if left_by_fork(c))
    rest = len(plan.conflicts) - forked
    cmd = home_command(home, "rollback.py", "--manifest", plan.run_dir, "--apply")
    out = []
    if forked:
        out.append(f"The run stays partly rolled back while the fork made since exists: {forked} item(s) stay as the "
                   f"run left them, since that fork reads its first turns from the grown file and undoing them "
                   f"would cut its history (once the fork is deleted, this finishes the run: {cmd})")
    if rest:
        out.append(f"The run is partly rolled back and stays undoable; once the {rest} other item(s) left alone are "
                   f"free (Codex lets go of them), run again: {cmd}" if forked else
                   f"The run is partly rolled back and stays undoable; once the items left alone are free, run again: "
                   f"{cmd}")
    return out


def put_back(plan: Any) -> List[str]:
    """The threads actually put back: not one left alone or deleted since."""
    ids: List[str] = []
    for o, _state in plan.steps:
        tid = getattr(o, "thread_id", None)
        if tid and tid not in ids and tid not in plan.left_ids and tid not in plan.deleted_ids:
            ids.append(tid)
    return ids


def render_undo(home: Any, plan: Any, report: Dict[str, Any], result: Optional[Dict[str, Any]],
                verbose: bool, sample: int, before: Optional[Dict[str, str]] = None) -> str:
    """What the rollback puts back, by session name (as the preview named it: `before`, read before the
    apply); what it leaves alone and why; the counters only with --verbose."""
    ids = put_back(plan)
    names = dict(before or {})
    missing = [t for t in ids[:max(sample, 10)] if t not in names]  # the ones shown
    if missing:
        names.update(names_from_db(home, missing))
    run = f"the {run_kind_words(report.get('kind'))} run {shown(os.path.basename(str(report.get('run_dir') or '')))}"
    out = ["=== Rollback ==="] if result is None else []
    if result is None:
        if not plan.actions and plan.conflicts:
            out += wrap(f"Nothing more can be undone now: {run} stays partly rolled back, "
                        f"{len(plan.conflicts)} item(s) left alone:")
        elif not plan.actions:
            out.append(f"Nothing to undo: {run} is already undone or changed nothing"
                       + (f" ({shown(report['state'])})." if report.get("state") else "."))
        else:
            out += wrap(f"Would undo {run}, putting back {len(ids)} session(s):")
            out += [f"  {x}" for x in labels_for(names, ids[:sample])]
            if len(ids) > sample:
                out.append(f"  (and {len(ids) - sample} more; --json lists them)")
    for c in report["conflict_sample"]:
        out.append(f"  left alone: {shown(c)}")
    for c in report.get("deleted_sample") or []:
        out.append(f"  left deleted: {shown(c)}")
    for r in report["later_runs_on_same_threads"]:
        out.append(f"  a later run changed the same threads: {shown(r)}")
    if result is None and not plan.actions:
        out += [ln for note in left_notes(home, plan) for ln in wrap(note, "    ")]
    if verbose:
        out.append("Counters:")
        out += [f"  {k}: {shown(v)}" for k, v in report.items()
                if not k.endswith("_sample") and k != "later_runs_on_same_threads"]
        out += [f"  move back: {shown(m)}" for m in report["moves_sample"]]
    if result is None:
        if plan.actions and report["later_runs_on_same_threads"]:
            out += ["No changes applied (dry-run). Roll the later runs back first:",
                    "  " + home_command(home, "rollback.py", "--latest", "--apply")]
        elif plan.actions:
            out += ["No changes applied (dry-run). To undo it, run:",
                    "  " + home_command(home, "rollback.py", "--manifest", plan.run_dir, "--apply")]
        return Lines(out)
    left = len(plan.conflicts)
    outcome = Outcome(
        heading="Rollback Result",
        done=(f"Done: {run} is undone" if not left else
              f"Partly done: {run} is undone except {left} item(s) left alone (above)")
        + (f"; {len(ids)} session(s) put back:" if ids else "."),
        changed=labels_for(names, ids),
        notes=[f"The DB as it was before this rollback is saved at {quote(b)}" for b in result.get("db_backups") or []]
        + left_notes(home, plan)
        + ([f"rollback.py --list now shows the run as: {shown(report['state'])}"] if report.get("state") else []),
        verify=home_command(home, "session_audit.py"),
        older=older_runs(home, report.get("run_dir")),
        counters={k: v for k, v in result.items()} if verbose else {})
    return Lines(out + render_outcome(outcome, verbose, sample))


def restore(home: Any, args: Any) -> int:
    """--restore-db: what putting the backup back would undo besides the run's own rows; with --apply
    (and --force where anything would be lost or split) the restore, recorded in the run's journal."""
    backup = user_path(args.restore_db)
    if args.apply:  # a running Codex is said first, as by every writer
        refuse_if_running(scan_activity(home.root), args.force)
    check = check_restore(home, backup)
    result = None
    if args.apply:  # under the home lock even when nothing differs: a run applying now would change that
        check_folders_inside(home, *([check.run.path] if check.run is not None else []))
        with HomeLock(home):
            check = check_restore(home, backup)  # again, under the lock
            if not check.same:
                check_writable(home, [Path(check.db)])
                check_folders_inside(home, *([check.run.path] if check.run is not None else []))
                result = restore_db(home, check, args.force)
    report = {"codex_dir": str(home.root), "db": check.db, "backup": str(backup), "dry_run": not args.apply,
              "run_dir": str(check.run.path) if check.run is not None else None, "rows_restored_as_the_run_had_them":
              check.own, "lost": len(check.lost), "split": len(check.split), "lost_sample": check.lost[:args.sample],
              "split_sample": check.split[:args.sample], "nothing_to_restore": check.same, "result": result}
    if args.json:
        print_json(report)
        return EXIT_CLEAN if check.clean or result else EXIT_FINDINGS
    emit("=== Restore a DB backup ===")
    if check.same:  # nothing it would change: no command to run, no backup of an identical DB
        emit(f"nothing to restore: every row of {safe_str(check.db)} is as in {safe_str(backup)}")
        return EXIT_CLEAN
    emit(f"{'restored' if result else 'would restore'} {safe_str(check.db)} from {safe_str(backup)}"
          + ("" if result else " (after backing up the DB as it is)"))
    emit(f"rows that differ only as the run changed them: {check.own}")
    for what, items in (("would be lost", check.lost), ("would be split", check.split)):
        if items:
            emit(f"{len(items)} change(s) since the backup {what}:" if what.endswith("lost") else
                  f"{len(items)} row(s) and file(s) {what}:")
            for item in items[:args.sample]:
                emit(f"  {item}")
    if result:
        emit(f"the DB as it was is saved at {safe_str(result['previous_db_saved_to'])}")
        return EXIT_CLEAN
    if not check.clean:
        if check.run is None or check.run.applied:  # never advise undoing a run already rolled back
            emit("refused without --force; undo the run instead (files and rows together): "
                  + home_command(home, "rollback.py", "--manifest", check.run.path if check.run else backup.parent))
        else:
            emit(f"refused without --force (the run {safe_str(check.run.path.name)} is already rolled back)")
        emit("or restore anyway: " + home_command(home, "rollback.py", "--restore-db", backup, "--force", "--apply"))
        return EXIT_FINDINGS
    emit("No changes applied (dry-run). Re-run with --apply: "
          + home_command(home, "rollback.py", "--restore-db", backup, "--apply"))
    return EXIT_CLEAN


def state_now(home: Any, run_dir: Path) -> Optional[str]:
    """The run's state as `rollback.py --list` words it, read again (after an undo: its `undone`
    record); "newest" when no later run is applied (only the later runs are read)."""
    try:
        run = read_run(run_dir, with_ops=False)  # the state only: its changes were read by the undo
        st = run_state(run)
        newest = False
        if st.key == APPLIED:
            runs = [os.path.realpath(str(p)) for p in list_runs(home.artifacts_dir)]
            later = runs[runs.index(os.path.realpath(str(run_dir))) + 1:] if os.path.realpath(str(run_dir)) in runs else []
            newest = not any(r.applied and r.complete for r in (read_run(Path(p), with_ops=False) for p in later))
        return st.state(newest=newest)
    except UserError:
        return None


def until(home: Any, args: Any) -> int:
    """--until RUN: the applied runs from the newest down to RUN, each undone whole before the next
    (older) one is planned; the first that cannot be undone whole stops it, named with what it left."""
    runs = runs_until(home, args.until)
    done: List[Dict[str, Any]] = []
    stopped: Optional[Dict[str, Any]] = None
    if args.apply and runs:
        refuse_if_running(scan_activity(home.root), args.force)
        check_writable(home)
        check_folders_inside(home, *(r.path for r in runs))
        with HomeLock(home):
            for db in home_dbs(home):
                if os.path.isfile(db):
                    settle_hot_journal(Path(db))
            for one in runs:
                with backups_ahead(home, one) as ahead:
                    plan = plan_undo(home, one, checked=ahead.start)
                    if plan.conflicts:  # planned with the newer runs undone: nothing of this one is touched
                        stopped = {**summary(plan, args.sample), "undone": False, "state": state_now(home, one.path)}
                        break
                    result = apply_undo(home, plan, progress=Progress.for_terminal(),
                                        ahead=ahead) if plan.needs_record() else None
                report = {**summary(plan, args.sample), "undone": True, "result": result,
                          "state": state_now(home, one.path)}
                if plan.conflicts:  # a thread Codex took meanwhile
                    stopped = {**report, "undone": False}
                    break
                done.append(report)
    left = [safe_str(r.path) for r in runs][len(done) + (1 if stopped else 0):] if args.apply else []
    if args.json:
        print_json({"codex_dir": str(home.root), "dry_run": not args.apply,
                    "runs": [safe_str(r.path) for r in runs], "undone": done, "stopped_at": stopped,
                    "not_reached": left})
    else:
        emit("=== Rollback until " + safe_str(args.until) + " ===")
        if not runs:
            emit("nothing left to undo: that run and every newer one are rolled back")
        for r in runs if not args.apply else []:
            emit(f"  would undo {r.begin.get('kind', '?')}  {safe_str(r.path)}")
        for d in done:
            emit(f"  undone: {d['kind']}  {d['run_dir']}")
        if stopped:
            emit(f"stopped at {stopped['kind']}  {stopped['run_dir']}: {stopped['conflicts']} item(s) cannot be "
                  "undone whole; it and the older runs are left as they are")
            for c in stopped["conflict_sample"]:
                emit(f"  left alone: {c}")
        for p in left:
            emit(f"  not reached: {p}")
        again = home_command(home, "rollback.py", "--until", args.until, "--apply")
        if stopped:
            emit("to undo the rest of it and leave those items as they are, run:")
            emit("  " + home_command(home, "rollback.py", "--manifest", stopped["run_dir"], "--apply"))
        if runs and not args.apply:
            emit("No changes applied (dry-run); each run is checked, newest first, as it comes. To undo them, run:")
            emit(f"  {again}")
    return EXIT_FINDINGS if stopped else EXIT_CLEAN


def main(argv: Optional[List[str]] = None) -> int:
    """The cyclic garbage collector held off meanwhile: a big journal's records and ops are tens of
    thousands of objects, none in a cycle, that each full collection would walk again."""
    was = gc.isenabled()
    gc.disable()
    try:
        return _main(argv)
    finally:
        if was:
            gc.enable()


def _main(argv: Optional[List[str]]) -> int:
    args = parse_args(argv)
    home = open_home(args.codex_dir, args.sqlite_home)
    if args.prune:
        return prune_runs(home, args)
    if args.list or not (args.latest or args.manifest or args.restore_db or args.until):
        runs = list_details(home)
        if args.json:
            print_json({"codex_dir": str(home.root), "runs": runs})
        else:
            emit(render_runs(home, runs))
        return EXIT_CLEAN
    if args.restore_db:
        return restore(home, args)
    if args.until:
        return until(home, args)
    target = find_run(home, args.manifest)  # the journal is read once, here
    if target is None:
        if args.json:
            print_json({"codex_dir": str(home.root), "nothing_left": True, "dry_run": not args.apply, "result": None})
        else:
            emit(f"nothing left to undo: every run recorded under {safe_str(home.artifacts_dir)} is undone or changed "
                 "nothing (rollback.py --list shows each)"
                  if list_details(home) else f"nothing left to undo: no runs are recorded under {safe_str(home.artifacts_dir)}")
        return EXIT_CLEAN
    later = later_dependents(home, target)
    if later and args.apply and not args.force:
        raise UserError(f"refusing: {len(later)} later run(s) changed threads this run changed "
                        f"(newest {safe_str(later[-1][0])}); roll those back first "
                        f"({home_command(home, 'rollback.py', '--latest', '--apply')}, repeated), or pass --force "
                        "to undo only what still holds this run's values")
    result = None
    if args.apply:  # planned once, under the lock (a big run's states are read once)
        refuse_if_running(scan_activity(home.root), args.force)
        check_writable(home)
        check_folders_inside(home, *([target.path] if isinstance(target, Run) else []))  # backups, journal
        with HomeLock(home):
            for db in home_dbs(home):  # a run killed mid-commit: SQLite's own undo first, then ours
                if os.path.isfile(db):
                    settle_hot_journal(Path(db))
            with backups_ahead(home, target) as ahead:  # made while the undo is planned
                plan = plan_undo(home, target, checked=ahead.start)
                before = None if args.json else names_from_db(home, put_back(plan)[:max(args.sample, 10)])  # as the preview
                if plan.needs_record():
                    result = apply_undo(home, plan, progress=Progress.for_terminal(), ahead=ahead)
    else:
        plan, before = plan_undo(home, target), None
    report = summary(plan, args.sample)  # after the apply: threads Codex held meanwhile are named too
    report["state"] = state_now(home, plan.run_dir) if isinstance(target, Run) else None
    report["later_runs_on_same_threads"] = [f"{safe_str(r)} ({n} thread(s))" for r, n in later]
    if args.json:
        print_json({**report, "dry_run": not args.apply, "result": result})
    else:
        emit(render_undo(home, plan, report, result, args.verbose, args.sample, before))
    return EXIT_FINDINGS if plan.conflicts else EXIT_CLEAN


if __name__ == "__main__":
    raise SystemExit(run(main))
