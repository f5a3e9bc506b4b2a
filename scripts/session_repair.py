#!/usr/bin/env python3
"""Point every thread's row at its real rollout again, unarchive, and index unindexed rollouts.

Dry-run by default: prints every move `src -> dst` and every row change. `--apply` writes, after a
backup and with a journal that rollback.py replays backwards. Never touches a file outside the home.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional

sys.dont_write_bytecode = True  # no __pycache__ inside the Codex home (the skill lives there)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sessionkit import EXIT_CLEAN, EXIT_FINDINGS  # noqa: E402
from sessionkit.audit import gather  # noqa: E402
from sessionkit.cli import (Parser, add_home_args, positive_int, print_json, require_known_threads,  # noqa: E402
                            run, thread_id_arg)
from sessionkit.home import open_home  # noqa: E402
from sessionkit.progress import Progress  # noqa: E402
from sessionkit.repair import apply_repair, parse_remaps, plan_repair, plan_report  # noqa: E402


def parse_args(argv: Optional[List[str]]) -> Any:
    p = Parser(prog="session_repair.py", description=(
        "Repair the session index: rows whose rollout_path is stale (moved files, a moved home), "
        "archived threads, and rollouts no row indexes. Dry-run unless --apply."))
    add_home_args(p)
    p.add_argument("--apply", action="store_true", help="write the changes (default: show the plan only).")
    p.add_argument("--force", action="store_true", help="apply even though Codex seems to be running.")
    p.add_argument("--no-fix-paths", action="store_true",
                   help="leave rows whose rollout_path does not exist as they are.")
    p.add_argument("--no-unarchive", action="store_true",
                   help="leave archived threads archived (default: bring all of them back).")
    p.add_argument("--thread-id", metavar="ID", action="append", default=[], type=thread_id_arg,
                   help="only this thread (repeatable); also limits unarchiving to these.")
    p.add_argument("--remap-prefix", metavar="OLD=NEW", action="append", default=[],
                   help="rewrite rollout_path and cwd values starting with OLD (on a path boundary) "
                        "to start with NEW, e.g. after moving the home (repeatable).")
    p.add_argument("--import-orphans", action="store_true",
                   help="add DB rows for rollouts that have none (never for ACTIVE_ORPHANs).")
    p.add_argument("--sample", type=positive_int, default=10, metavar="N",
                   help="moves and rows shown in the plan (default: 10).")
    return p.parse_args(argv)


def render(codex_dir: str, r: Dict[str, Any], result: Optional[Dict[str, Any]], dry_run: bool) -> str:
    out = ["=== Session Repair Plan ===", f"codex_dir: {codex_dir}", f"dry_run: {dry_run}"]
    for k in ("path_fix_enabled", "unarchive_enabled", "archived_before", "planned_path_moves", "planned_unarchive_moves", "planned_row_updates", "planned_row_inserts",
              "unarchive_rows", "repoint_rows", "remap_rows", "skipped"):
        out.append(f"{k}: {r[k]}")
    if r["suggested_remap"]:
        out.append(f"rows point into another home: consider {r['suggested_remap']}")
    out += [f"  move {m}" for m in r["moves_sample"]]
    for row in r["rows_sample"]:
        changes = ", ".join(f"{k}: {row['old'].get(k)!r} -> {v!r}" for k, v in row["new"].items())
        out.append(f"  row {row['thread_id']}: {changes}")
    for ins in r["inserts_sample"]:
        out.append(f"  insert {ins['thread_id']}: {ins['rollout_path']} ({ins['model_provider']}, {ins['cwd']})")
    for s in r["skipped_sample"]:
        out.append(f"  skipped {s['thread_id']}: {s['reason']}")
    if result is None:
        out.append("No changes applied (dry-run). Re-run with --apply to write." if dry_run
                   else "Nothing to change.")
        return "\n".join(out)
    out += ["", "=== Session Repair Result ===", f"db_backup: {result['db_backup']}",
            f"manifest_csv: {result['manifest_csv']}", f"journal: {result['journal']}",
            f"files_moved: {result['moved']}", f"path_moves_applied: {result['path_moves_applied']}",
            f"unarchived_rows: {result['unarchived_rows']}", f"archived_after: {result['archived_after']}",
            f"updated_rows: {result['updated_rows']}",
            f"inserted_rows: {result['inserted_rows']}", f"undo with: {result['rollback']}",
            "Verify: run session_audit.py again, then restart your editor's Codex."]
    return "\n".join(out)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    remaps = parse_remaps(args.remap_prefix)
    home = open_home(args.codex_dir, args.sqlite_home)
    progress = Progress.for_terminal()
    inputs = gather(home, progress)
    require_known_threads(args.thread_id, (r.id for r in inputs.rows), inputs.index.by_thread)
    plan = plan_repair(inputs, fix_paths=not args.no_fix_paths, unarchive=not args.no_unarchive,
                       thread_ids=args.thread_id, remaps=remaps, import_orphans=args.import_orphans)
    report = plan_report(plan, args.sample)
    has_work = bool(plan.moves or plan.rows or plan.inserts)
    result = None
    if args.apply and has_work:
        result = apply_repair(inputs, plan, args.force, progress=progress)
    if args.json:
        print_json({"codex_dir": str(home.root), **report, "dry_run": not args.apply, "result": result})
    else:
        print(render(str(home.root), report, result, not args.apply))
    return EXIT_FINDINGS if plan.skipped else EXIT_CLEAN


if __name__ == "__main__":
    raise SystemExit(run(main))
