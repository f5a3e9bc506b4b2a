#!/usr/bin/env python3
"""Fix everything the audit found in one run: files that moved, a moved home, sessions of another
provider, unindexed files, incomplete histories, lost names.

Dry-run by default: every change grouped by cause, each session named once. `--apply` makes them
all as ONE run (one journal, one set of backups): one `rollback.py --latest --apply` undoes it.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional

sys.dont_write_bytecode = True  # no __pycache__ inside the Codex home (the skill lives there)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sessionkit import EXIT_CLEAN, EXIT_FINDINGS, Lines, UserError  # noqa: E402
from sessionkit.ui.cli import (COMMAND, Parser, add_home_args, emit, positive_int, print_json, provider_arg,  # noqa: E402
                            require_known_threads, run, thread_id_arg)
from sessionkit.ui.commands import home_command, rerun_command  # noqa: E402
from sessionkit.codexfiles.home import CodexHome, open_home  # noqa: E402
from sessionkit.ui.labels import names_from_db, session_names  # noqa: E402
from sessionkit.ui.progress import Progress  # noqa: E402
from sessionkit.ui.labels import shown  # noqa: E402
from sessionkit.fixes.recover import RecoverOptions, RecoverPlan, apply_recover, plan_recover, plan_report  # noqa: E402
from sessionkit.fixes.repair import parse_remaps  # noqa: E402
from sessionkit.diagnose.snapshot import gather  # noqa: E402
from sessionkit.fixes.history_reset import rebuild_after  # noqa: E402


def parse_args(argv: Optional[List[str]]) -> Any:
    p = Parser(prog="session_recover.py", description=(
        "Every fix the audit recommends (moved files, a moved home, another provider, unindexed files, "
        "incomplete histories, lost names) as one plan and, with --apply, one run with one undo."))
    add_home_args(p)
    p.add_argument("--remap-prefix", metavar="OLD=NEW", action="append", default=[],
                   help="rewrite paths and folders starting with OLD to start with NEW (repeatable); "
                        "default: the one the audit found for a moved home.")
    p.add_argument("--no-remap", action="store_true", help="do not use the audit's moved-home remap.")
    p.add_argument("--target-provider", metavar="ID", type=provider_arg,
                   help="provider to move sessions to (default: the current one in config.toml).")
    p.add_argument("--include-archived", action="store_true",
                   help="also move archived sessions to the target provider.")
    p.add_argument("--unarchive", action="store_true", help="also bring archived sessions back (default: they stay archived).")
    p.add_argument("--no-fix-paths", action="store_true", help="leave rows whose file is elsewhere as they are.")
    p.add_argument("--no-import-orphans", action="store_true", help="leave rollout files with no index entry alone.")
    p.add_argument("--no-fix-history", action="store_true", help="leave incomplete stored histories as they are.")
    p.add_argument("--rebuild-history", action="store_true",
                   help="after --apply, have your Codex rebuild each reset history now (thread/resume).")
    p.add_argument("--codex-bin", metavar="PATH", help="the Codex CLI for --rebuild-history (default: codex on PATH).")
    p.add_argument("--thread-id", metavar="ID", action="append", default=[], type=thread_id_arg,
                   help="only this thread (repeatable).")
    p.add_argument("--apply", action="store_true", help="make every change, as one run (default: show the plan).")
    p.add_argument("--force", action="store_true", help="apply even though Codex seems to be running.")
    p.add_argument("--sample", type=positive_int, default=10, metavar="N", help="sessions shown per cause (default: 10).")
    p.add_argument("--verbose", action="store_true", help="also print the raw counters of the result.")
    return p.parse_args(argv)


def audit_remap(inputs: Any) -> List[str]:
    """The audit's `--remap-prefix OLD=NEW` for a moved home (or user folder), if it found one."""
    from sessionkit.diagnose.surfaces import judge_all, moved_home
    moved = moved_home(inputs, judge_all(inputs), 1)
    arg = str((moved or {}).get("remap_arg") or "")
    return [arg.split(" ", 1)[1]] if arg.startswith("--remap-prefix ") else []


def options(args: Any, inputs: Any) -> RecoverOptions:
    raw = list(args.remap_prefix)
    remap_from = "--remap-prefix" if raw else None
    remaps = parse_remaps(raw)  # the user's own --remap-prefix: a bad one is their one-line error
    if not raw and not args.no_remap:
        raw = audit_remap(inputs)  # checked by the audit (never an odd old home): used only when accepted
        try:
            remaps = parse_remaps(raw)
        except UserError:
            remaps = []
        remap_from = "the audit (a moved home)" if remaps else None
    return RecoverOptions(remaps=remaps, remap_from=remap_from, target=args.target_provider,
                          unarchive=args.unarchive, fix_paths=not args.no_fix_paths,
                          fix_history=not args.no_fix_history, import_orphans=not args.no_import_orphans,
                          include_archived=args.include_archived, thread_ids=args.thread_id)


def apply_command(home: CodexHome, opts: RecoverOptions) -> str:
    """The command the user runs to apply: this one, with the audit's remap written out."""
    words = [w for w in COMMAND[2:] if w != "--apply"]
    if opts.remap_from and opts.remap_from.startswith("the audit"):
        words += [w for a, b in opts.remaps for w in ("--remap-prefix", f"{a}={b}")]
    return rerun_command(home, words + ["--apply"], "session_recover.py")


def render(home: CodexHome, plan: RecoverPlan, r: Dict[str, Any], result: Optional[Dict[str, Any]],
           dry_run: bool, cmd: str, names: Optional[Dict[str, str]] = None, verbose: bool = False) -> str:
    from sessionkit.ui.results import render as render_outcome, wrap  # the text's only: --json loads none
    out = ["=== Session Recovery Plan ===", f"codex_dir: {home.root}", f"dry_run: {dry_run}"]
    if r["remap"]:
        out += wrap(f"moved home: --remap-prefix {' '.join(r['remap'])} (from {r['remap_from']})")
    elif r["suggested_remap"]:
        out += wrap(f"rows point into another home: add {r['suggested_remap']}")
    out += wrap(f"sessions to recover: {r['sessions']}"
                + (" (" + ", ".join(f"{c}: {n}" for c, n in r["by_cause"].items()) + ")" if r["by_cause"] else "")
                + f"; target provider: {r['target_provider']}"
                + ("" if r["unarchive_enabled"] else "; archived sessions stay archived (--unarchive brings them back)"))
    for cause, items in r["causes_sample"].items():
        out.append(f"{cause} ({r['by_cause'][cause]}):")
        for s in items:  # wrapped to the terminal at spaces (a path stays whole)
            out += wrap(f"  {s['session']}", "      ")
            out += wrap(f"      {'; '.join(s['changes'])}", "        ")
        if r["by_cause"][cause] > len(items):
            out.append(f"  ... and {r['by_cause'][cause] - len(items)} more (--sample N shows more, --json lists them)")
    out += [ln for w in r["warnings"] for ln in wrap(f"warning: {w}")]
    if r["planned_history_resets"]:
        out.append("history comes back: " + ("rebuilt now by your Codex (--rebuild-history)" if "--rebuild-history"
                                             in cmd else "the first time each session is opened in Codex "
                                             "(--rebuild-history rebuilds them all at once)"))
    if r.get("decompress_first"):
        out.append(f"compressed sessions decompressed first (as Codex does when it opens one): "
                   f"{r['decompress_first']}")
    for s in r["skipped_sample"]:
        out += wrap(f"  skipped {s['session']}", "      ") + wrap(f"      {s['reason']}", "        ")
    if result is None:
        if not plan.has_work:
            out.append("Nothing to change.")
        elif dry_run:
            out += ["No changes applied (dry-run). To make them all as one run (one undo), run:", "  " + cmd]
        return Lines(out)
    return Lines(out + [""] + render_outcome(recovery_outcome(home, plan, r, result, names or {}), verbose))


def recovery_outcome(home: CodexHome, plan: RecoverPlan, r: Dict[str, Any], result: Dict[str, Any],
                     names: Dict[str, str]) -> Outcome:
    """The recovery's result in words, as the other scripts say theirs: the sessions it changed by
    name, what it left and why, the one undo and the verify command; the counters with --verbose."""
    from sessionkit.ui.results import Outcome, labels_for
    from sessionkit.codexfiles.ids import norm_id
    left = {norm_id(s["thread_id"]): str(s["reason"]) for s in result.get("skipped_at_apply") or []}
    ids: List[str] = []
    for tids in plan.groups().values():
        ids += [t for t in tids if t not in ids and norm_id(t) not in left]  # what was applied, not planned
    after = ", ".join(f"{shown(k)} {v}" for k, v in result["provider_distribution_after"].items())
    n = len(ids)
    rebuilt = r.get("history_rebuild") or {}
    skipped = [(names.get(t, shown(t)), shown(why)) for t, why in plan.skipped]
    planned = {norm_id(t) for t, _ in plan.skipped}
    skipped += [(names.get(str(s["thread_id"]), shown(s["thread_id"])), shown(s["reason"]))
                for s in result.get("skipped_at_apply") or [] if norm_id(s["thread_id"]) not in planned]
    pre = result.get("decompression") or {}
    undo = result.get("rollback_all") or result["rollback"]
    notes = [f"Your Codex rebuilt the stored history of {rebuilt['rebuilt']} session(s)."] \
        if rebuilt and not rebuilt.get("interrupted") else []
    if pre.get("decompressed"):
        notes.append(f"{pre['decompressed']} compressed session(s) were decompressed first, as Codex does when it "
                     "opens one (the undo below compresses them back).")
    if rebuilt.get("interrupted"):  # last: the undo it names follows it
        notes.append(interrupted_note(rebuilt))
    return Outcome(
        heading="Session Recovery Result",
        done=f"Done: {n} session{'s' if n != 1 else ''} recovered in one run (sessions per provider now: "
             f"{after}; {result['archived_after']} archived)" + (":" if ids else "."),
        changed=labels_for(names, ids),
        skipped=skipped,
        notes=notes,
        undo=undo, undo_label="undo all of it with:",
        verify=home_command(home, "session_audit.py"), older=_older(home, result),
        counters={k: v for k, v in result.items() if k != "rollback"})


def interrupted_note(rebuilt: Dict[str, Any]) -> str:
    """A Ctrl-C while Codex rebuilt the histories, in plain words: the apply had committed, so it
    stands; the histories not rebuilt come back when each session is opened; the one undo follows."""
    left = len(rebuilt.get("failed") or [])
    return (f"The run was interrupted (Ctrl-C) while your Codex rebuilt the stored histories: everything "
            f"applied above stands. Your Codex rebuilt {rebuilt.get('rebuilt', 0)} of them; {left} session(s) "
            f"were not rebuilt and each reads 0 turns until it is opened once in Codex (or run this again with "
            f"--rebuild-history). The command below undoes all of it.")


def _older(home: CodexHome, result: Dict[str, Any]) -> List[str]:
    """Runs still applied before this one, its own decompression left out (the undo above takes both)."""
    import re
    from sessionkit.runlog.runs import older_runs  # only with a result to show
    pre = os.path.basename(str((result.get("decompression") or {}).get("run_dir") or ""))
    m = re.match(r"decompress_(\d{4})(\d\d)(\d\d)_(\d\d)(\d\d)(\d\d)", pre)
    own = "decompress, {}-{}-{}T{}:{}:{}".format(*m.groups()) if m else None
    return [o for o in older_runs(home, result.get("run_dir")) if o != own]


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.remap_prefix and args.no_remap:
        raise UserError("--remap-prefix and --no-remap contradict each other")
    home = open_home(args.codex_dir, args.sqlite_home)
    progress = Progress.for_terminal()
    inputs = gather(home, progress)
    if args.apply:  # read only so far
        from sessionkit.fixes.migrate import refuse_unknown_target
        refuse_unknown_target(inputs, args.target_provider, args.force)
    require_known_threads(args.thread_id, (r.key for r in inputs.rows), inputs.index.by_thread)
    opts = options(args, inputs)
    plan = plan_recover(inputs, opts)
    ids = [t for tids in plan.groups().values() for t in tids[:args.sample]] + [t for t, _ in plan.skipped[:args.sample]]
    names = {t: shown(n) for t, n in session_names(inputs, ids).items()}  # titles and folders escaped
    report = plan_report(plan, names, args.sample)
    result = None
    codex = None
    if args.rebuild_history and args.apply and plan.history.rebuild:
        from sessionkit.fixes.codex_rebuild import find_codex  # only here: it loads subprocess and threading
        codex = find_codex(args.codex_bin)
    if args.apply and plan.has_work:
        result = apply_recover(plan, args.force, progress=progress)
    if result is not None:  # the one undo of all of it: this run and the decompression before it
        pre = result.get("decompression")
        result["rollback_all"] = home_command(home, "rollback.py", "--until", pre["run_dir"], "--apply") \
            if pre else result["rollback"]
    if codex is not None and result is not None:
        report["history_rebuild"] = rebuild_after(home, plan.history, result, codex)
    cmd = apply_command(home, opts)
    if args.json:
        print_json({"codex_dir": str(home.root), **report, "dry_run": not args.apply,
                    "apply_command": cmd if plan.has_work and not args.apply else None, "result": result})
    else:
        if result is not None:  # the result names each session as it now is, as the rollback's screens will
            names = {**names, **names_from_db(home, ids)}
        text = render(home, plan, report, result, not args.apply, cmd, names, args.verbose)
        emit(text)
    failed = (report.get("history_rebuild") or {}).get("failed")
    return EXIT_FINDINGS if plan.skipped or (result or {}).get("skipped_at_apply") or failed else EXIT_CLEAN


if __name__ == "__main__":
    raise SystemExit(run(main))
