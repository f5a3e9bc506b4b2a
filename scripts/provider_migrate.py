#!/usr/bin/env python3
"""Make threads created under another model_provider visible under the current one.

Codex 0.169 reads the provider from line 1 of each rollout, so the DB row alone does not stick:
this rewrites both (line 1 in place, same length where possible, mtime kept). Dry-run by default.
"""
from __future__ import annotations

import os
import sys
from collections import Counter
from typing import Any, Dict, List, Optional

sys.dont_write_bytecode = True  # no __pycache__ inside the Codex home (the skill lives there)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sessionkit import EXIT_CLEAN, EXIT_FINDINGS, Lines  # noqa: E402
from sessionkit.diagnose.snapshot import gather  # noqa: E402
from sessionkit.ui.cli import (COMMAND, Parser, add_home_args, emit, positive_int, print_json, provider_arg,  # noqa: E402
                            require_known_threads, run, thread_id_arg)
from sessionkit.ui.commands import home_command, rerun_command  # noqa: E402
from sessionkit.codexfiles.home import CodexHome, open_home  # noqa: E402
from sessionkit.ui.labels import session_names, shown  # noqa: E402
from sessionkit.fixes.migrate import apply_migration, plan_migration, plan_report, refuse_unknown_target  # noqa: E402
from sessionkit.ui.progress import Progress  # noqa: E402
from sessionkit.ui.results import Outcome, labels_for, nothing_to_do  # noqa: E402
from sessionkit.ui.results import render as render_outcome  # noqa: E402


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
    p.add_argument("--force", action="store_true", help="apply even though Codex seems to be running, or to a "
                   "--target-provider config.toml does not define.")
    p.add_argument("--sample", "--max-samples", dest="sample", type=positive_int, default=10, metavar="N",
                   help="threads shown in the plan (default: 10).")
    p.add_argument("--verbose", action="store_true", help="also print the result's raw counters.")
    return p.parse_args(argv)


def archived_note(archived: Dict[str, int], include_archived: bool) -> List[str]:
    """What the per-provider counts leave out: the audit counts archived sessions, the migration by
    default does not, so the same home must not seem to show two different numbers."""
    if not archived or include_archived:
        return []
    per = ", ".join(f"{shown(k)} {v}" for k, v in sorted(archived.items(), key=lambda kv: (-kv[1], kv[0])))
    return [f"    (not counting {sum(archived.values())} archived: {per}; "
            "add --include-archived to count and move them too)"]


def render(home: CodexHome, plan: Dict[str, Any], result: Optional[Dict[str, Any]], dry_run: bool,
           names: Dict[str, str], verbose: bool = False, archived: Optional[Dict[str, int]] = None,
           include_archived: bool = False) -> str:
    """The plan as the user knows the sessions (title, date, folder), then the result and the undo."""
    archived = archived or {}
    dist = ", ".join(f"{shown(k)} {v}" for k, v in plan["provider_distribution_before"].items())
    out = ["=== Provider Migration Plan ===",
           f"codex_dir: {plan['codex_dir']}",
           f"dry_run: {dry_run}",
           f"target_provider: {plan['target_provider']}  (from {plan['target_source']})",
           f"sessions to move to {plan['target_provider']}: {plan['candidates']} (first lines to rewrite: "
           f"{plan['line1_rewrites']}, {plan['line1_growing']} of them longer; index entries to update: "
           f"{plan['row_updates']})",
           f"sessions per provider now{', archived included' if archived and include_archived else ''}: {dist}",
           *archived_note(archived, include_archived)]
    out += [f"WARNING: {w}" for w in plan["warnings"]]
    for s in plan["sample"]:
        out += [f"  {names.get(s['thread_id'], s['thread_id'])}",
                "      " + (f"index already {shown(s['new_provider'])}" if s["old_provider"] == s["new_provider"]
                               else f"{shown(s['old_provider'])} -> {shown(s['new_provider'])}")
                + f"; first line: {s['line1']}"]
    if plan["skipped"]:
        out.append(f"sessions skipped: {plan['skipped']}")
        for s in plan["skipped_sample"]:
            out += [f"  {names.get(s['thread_id'], s['thread_id'])}", f"      {shown(s['reason'])}"]
        if any("session_repair.py" in s["reason"] for s in plan["skipped_sample"]):
            out += ["Repair those first (a dry-run):", "  " + home_command(home, "session_repair.py")]
    if plan["candidates"] > len(plan["sample"]):
        out.append(f"  (first {len(plan['sample'])} shown; --sample N shows more, --json lists them)")
    if result is None:
        out.append("No changes applied (dry-run). To write them, run the same command with --apply:"
                   if dry_run else "Nothing to change.")
        if dry_run and plan["candidates"]:
            out.append("  " + rerun_command(home, COMMAND[2:] + ["--apply"], "provider_migrate.py"))
        return Lines(out)
    return Lines(out + [""] + render_result(home, plan, result, names, verbose, bool(archived)))


def render_result(home: CodexHome, plan: Dict[str, Any], result: Dict[str, Any], names: Dict[str, str],
                  verbose: bool = False, any_archived: bool = False) -> List[str]:
    """What moved, by name, what was skipped and why, the undo and the verify command."""
    failed = {s["thread_id"] for s in result.get("skipped_at_apply") or []}
    moved = [s["thread_id"] for s in plan["sample"] if s["thread_id"] not in failed]
    n = max(0, plan["candidates"] - len(failed))
    after = ", ".join(f"{shown(k)} {v}" for k, v in result["provider_distribution_after"].items())
    from sessionkit.runlog.runs import older_runs  # only with a result to show: a dry-run never loads it
    outcome = Outcome(
        heading="Provider Migration Result",
        done=f"Done: {n} session{'s' if n != 1 else ''} moved to {plan['target_provider']}"
             f" (sessions per provider now{', archived included' if any_archived else ''}: {after})"
             + (":" if moved else "."),
        changed=labels_for(names, moved),
        skipped=[(names.get(s["thread_id"], s["thread_id"]), s["reason"])
                 for s in (result.get("skipped_at_apply") or [])],
        undo=result["rollback"], verify=home_command(home, "session_audit.py"),
        undo_then=[(f"the {result['decompression']['decompressed']} compressed session(s) decompressed first",
                    result["decompression"]["rollback"])] if result.get("decompression") else [],
        older=older_runs(home, result.get("run_dir")),
        counters={k: v for k, v in result.items() if k not in ("rollback", "provider_distribution_after")})
    if plan["candidates"] > len(plan["sample"]):
        outcome.changed.append(f"(and {plan['candidates'] - len(plan['sample'])} more; --json lists them)")
    return render_outcome(outcome, verbose)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    home = open_home(args.codex_dir, args.sqlite_home)
    progress = Progress.for_terminal()
    inputs = gather(home, progress)
    if args.apply:  # read only so far
        refuse_unknown_target(inputs, args.target_provider, args.force)
    require_known_threads(args.thread_id, (r.key for r in inputs.rows), inputs.index.by_thread)
    plan = plan_migration(inputs, args.target_provider, args.from_provider, args.thread_id,
                          args.include_archived, args.db_only)
    report = {"codex_dir": str(home.root), **plan_report(plan, args.sample)}
    result = None
    if args.apply and plan.changes:
        result = apply_migration(inputs, plan, args.force, progress=progress)
    if args.json:
        print_json({**report, "dry_run": not args.apply, "result": result})
    elif not plan.changes and not plan.skipped:
        emit(nothing_to_do(f"no session of another provider to move to {report['target_provider']}"))
    else:
        ids = [s["thread_id"] for s in report["sample"]] + [s["thread_id"] for s in report["skipped_sample"]] \
            + [s["thread_id"] for s in (result or {}).get("skipped_at_apply") or []]
        archived = Counter(r.model_provider for r in inputs.rows if r.archived)
        emit(render(home, report, result, not args.apply, session_names(inputs, ids), args.verbose,
                    archived, args.include_archived))
    return EXIT_FINDINGS if plan.skipped else EXIT_CLEAN


if __name__ == "__main__":
    raise SystemExit(run(main))
