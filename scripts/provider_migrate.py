#!/usr/bin/env python3
"""Make threads created under another model_provider visible under the current one.

Codex 0.169 reads the provider from line 1 of each rollout, so the DB row alone does not stick:
this rewrites both (line 1 in place, same length where possible, mtime kept). Dry-run by default.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional

sys.dont_write_bytecode = True  # no __pycache__ inside the Codex home (the skill lives there)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sessionkit import EXIT_CLEAN, EXIT_FINDINGS  # noqa: E402
from sessionkit.audit import gather  # noqa: E402
from sessionkit.cli import (Parser, add_home_args, positive_int, print_json, provider_arg,  # noqa: E402
                            require_known_threads, run, thread_id_arg)
from sessionkit.home import open_home  # noqa: E402
from sessionkit.migrate import apply_migration, plan_migration, plan_report  # noqa: E402
from sessionkit.progress import Progress  # noqa: E402


def parse_args(argv: Optional[List[str]]) -> Any:
    p = Parser(prog="provider_migrate.py", description=(
        "Move threads of other model providers to the target provider so the default Codex list "
        "shows them. Dry-run unless --apply."))
    add_home_args(p)
    p.add_argument("--target-provider", metavar="ID", type=provider_arg,
                   help="provider id to move threads to (default: the current one in config.toml, "
                        "profile-aware).")
    p.add_argument("--from-provider", metavar="ID", action="append", default=[], type=provider_arg,
                   help="only move threads whose provider is ID (repeatable; default: every other).")
    p.add_argument("--thread-id", metavar="ID", action="append", default=[], type=thread_id_arg,
                   help="only this thread (repeatable).")
    p.add_argument("--include-archived", action="store_true",
                   help="also migrate archived threads (default: active ones only).")
    p.add_argument("--db-only", action="store_true",
                   help="change only the DB rows, as the original design did (Codex 0.169 reverts it).")
    p.add_argument("--apply", action="store_true", help="write the changes (default: show the plan only).")
    p.add_argument("--force", action="store_true", help="apply even though Codex seems to be running.")
    p.add_argument("--sample", type=positive_int, default=10, metavar="N",
                   help="threads shown in the plan (default: 10).")
    return p.parse_args(argv)


def render(plan: Dict[str, Any], result: Optional[Dict[str, Any]], dry_run: bool) -> str:
    out = ["=== Provider Migration Plan ===",
           f"codex_dir: {plan['codex_dir']}",
           f"target_provider: {plan['target_provider']}  (from {plan['target_source']})",
           f"dry_run: {dry_run}",
           f"candidates: {plan['candidates']}  (line 1 rewrites: {plan['line1_rewrites']}, "
           f"longer line 1: {plan['line1_growing']}, row updates: {plan['row_updates']})",
           f"provider_distribution_before: {plan['provider_distribution_before']}"]
    out += [f"WARNING: {w}" for w in plan["warnings"]]
    for s in plan["sample"]:
        out.append(f"  {s['thread_id']}: {s['old_provider']} -> {s['new_provider']}  line 1: {s['line1']}")
    if plan["skipped"]:
        out.append(f"skipped: {plan['skipped']}")
        out += [f"  {s['thread_id']}: {s['reason']}" for s in plan["skipped_sample"]]
    if result is None:
        out.append("No changes applied (dry-run). Re-run with --apply to write." if dry_run
                   else "Nothing to change.")
        return "\n".join(out)
    out += ["", "=== Provider Migration Result ===",
            f"db_backup: {result['db_backup']}"]
    if result["history_backup"]:
        out.append(f"history_db_backup: {result['history_backup']}")
    out += [f"manifest_csv: {result['manifest_csv']}", f"journal: {result['journal']}",
            f"line1_rewritten: {result['line1_rewritten']}", f"updated_rows: {result['updated_rows']}",
            f"provider_distribution_after: {result['provider_distribution_after']}",
            f"undo with: {result['rollback']}",
            "Verify: run session_audit.py again, then restart your editor's Codex."]
    return "\n".join(out)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    home = open_home(args.codex_dir, args.sqlite_home)
    progress = Progress.for_terminal()
    inputs = gather(home, progress)
    require_known_threads(args.thread_id, (r.id for r in inputs.rows), inputs.index.by_thread)
    plan = plan_migration(inputs, args.target_provider, args.from_provider, args.thread_id,
                          args.include_archived, args.db_only)
    report = {"codex_dir": str(home.root), **plan_report(plan, args.sample)}
    result = None
    if args.apply and plan.changes:
        result = apply_migration(inputs, plan, args.force, progress=progress)
    if args.json:
        print_json({**report, "dry_run": not args.apply, "result": result})
    else:
        print(render(report, result, not args.apply))
    return EXIT_FINDINGS if plan.skipped else EXIT_CLEAN


if __name__ == "__main__":
    raise SystemExit(run(main))
