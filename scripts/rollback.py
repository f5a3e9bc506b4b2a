#!/usr/bin/env python3
"""Undo a provider migration or a repair run from its journal, exactly; or put a DB backup back.

Dry-run by default. Only values that still hold what the run wrote are restored; anything changed
since is reported and left alone. Running it twice changes nothing the second time.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, List, Optional

sys.dont_write_bytecode = True  # no __pycache__ inside the Codex home (the skill lives there)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sessionkit import EXIT_CLEAN, EXIT_FINDINGS  # noqa: E402
from sessionkit.cli import Parser, add_home_args, existing_path_arg, positive_int, print_json, run  # noqa: E402
from sessionkit import UserError  # noqa: E402
from sessionkit.home import open_home  # noqa: E402
from sessionkit.paths import safe_str  # noqa: E402
from sessionkit.locks import scan_activity  # noqa: E402
from sessionkit.safety import HomeLock, check_writable, refuse_if_running  # noqa: E402
from sessionkit.undo import apply_undo, describe_runs, find_run, later_dependents, plan_undo, restore_db, summary  # noqa: E402


def parse_args(argv: Optional[List[str]]) -> Any:
    p = Parser(prog="rollback.py", description=(
        "List past runs of provider_migrate.py and session_repair.py, and undo one. "
        "Dry-run unless --apply."))
    add_home_args(p)
    p.add_argument("--list", action="store_true", help="list recorded runs and exit.")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--latest", action="store_true", help="undo the most recent run.")
    which.add_argument("--manifest", metavar="PATH", type=existing_path_arg,
                       help="undo the run of this manifest CSV (or its run folder / journal).")
    which.add_argument("--restore-db", metavar="BACKUP", type=existing_path_arg,
                       help="put this whole DB backup back (the current DB is backed up first).")
    p.add_argument("--apply", action="store_true", help="write (default: show what would be undone).")
    p.add_argument("--force", action="store_true", help="apply even though Codex seems to be running.")
    p.add_argument("--sample", type=positive_int, default=10, metavar="N", help="items shown (default: 10).")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    home = open_home(args.codex_dir, args.sqlite_home)
    if args.list or not (args.latest or args.manifest or args.restore_db):
        runs = describe_runs(home)
        if args.json:
            print_json({"codex_dir": str(home.root), "runs": runs})
        else:
            print(f"runs recorded under {home.artifacts_dir}: {len(runs)}")
            for r in runs:
                print(f"  {r['started']}  {r['kind']:<18} {r['status']:<22} {r['run_dir']}")
            if runs:
                print("undo the latest with: rollback.py --latest (preview), then --apply")
        return EXIT_CLEAN
    if args.restore_db:
        if not args.apply:
            print(f"would restore {home.state_db.path} from {args.restore_db} (after backing up the current DB); "
                  "re-run with --apply")
            return EXIT_CLEAN
        refuse_if_running(scan_activity(home.root), args.force)
        check_writable(home)
        with HomeLock(home):
            result = restore_db(home, Path(args.restore_db).expanduser())
        print_json(result) if args.json else print(
            f"restored {home.state_db.path} from {result['restored_from']}\n"
            f"the DB as it was is saved at {result['previous_db_saved_to']}")
        return EXIT_CLEAN
    run_dir = find_run(home, args.manifest)
    plan = plan_undo(home, run_dir)
    report = summary(plan, args.sample)
    later = later_dependents(home, run_dir)
    report["later_runs_on_same_threads"] = [f"{safe_str(r)} ({n} thread(s))" for r, n in later]
    if later and args.apply and not args.force:
        raise UserError(f"refusing: {len(later)} later run(s) changed threads this run changed "
                        f"(newest {safe_str(later[-1][0])}); roll those back first (rollback.py --latest "
                        f"--apply, repeated), or pass --force to undo only what still holds this run's values")
    result = None
    if args.apply and plan.actions:
        refuse_if_running(scan_activity(home.root), args.force)
        check_writable(home)
        with HomeLock(home):
            plan = plan_undo(home, run_dir)  # again, under the lock
            result = apply_undo(home, plan)
    if args.json:
        print_json({**report, "dry_run": not args.apply, "result": result})
    else:
        print("=== Rollback ===")
        for k, v in report.items():
            if not k.endswith("_sample") and k != "later_runs_on_same_threads":
                print(f"{k}: {v}")
        for c in report["conflict_sample"]:
            print(f"  left alone: {c}")
        for m in report["moves_sample"]:
            print(f"  move back: {m}")
        for r in report["later_runs_on_same_threads"]:
            print(f"  a later run changed the same threads: {r}")
        if result is None:
            print("nothing to undo" if not plan.actions else "No changes applied (dry-run). Re-run with --apply.")
        else:
            print(f"rows_reverted: {result['rows_reverted']}  line1_restored: {result['line1_restored']}  "
                  f"files_moved_back: {result['files_moved_back']}")
            for b in result["db_backups"]:
                print(f"db backup taken before the rollback: {b}")
    return EXIT_FINDINGS if plan.conflicts else EXIT_CLEAN


if __name__ == "__main__":
    raise SystemExit(run(main))
