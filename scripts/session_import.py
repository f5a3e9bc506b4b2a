#!/usr/bin/env python3
"""Bring the sessions of another Codex home (an old machine's ~/.codex, as a folder or an archive)
into this one, as Codex lists, reads and resumes them, without overwriting anything here.

Dry-run by default: what would be imported, skipped and remapped, with titles, dates and folders.
`--apply` writes, after a backup and with a journal; rollback.py --latest undoes it. SRC is only read.
"""
from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.dont_write_bytecode = True  # no __pycache__ inside the Codex home (the skill lives there)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sessionkit import EXIT_CLEAN, EXIT_FINDINGS, Lines, UserError  # noqa: E402
from sessionkit.fixes.archive_src import open_source  # noqa: E402
from sessionkit.ui.cli import Parser, emit, positive_int, print_json, run, thread_id_arg  # noqa: E402
from sessionkit.ui.labels import label, short_title, shown  # noqa: E402
from sessionkit.ui.progress import Progress  # noqa: E402
from sessionkit.ui.commands import home_command  # noqa: E402
from sessionkit.codexfiles.home import CodexHome, open_home  # noqa: E402
from sessionkit.codexfiles.paths import resolves_inside  # noqa: E402
from sessionkit.fixes.importer import parse_remaps, plan_import, plan_report, read_dest, read_source  # noqa: E402


def parse_args(argv: Optional[List[str]]) -> Any:
    p = Parser(prog="session_import.py", description=(
        "Import the sessions of another Codex home (a folder, or a .tar/.tar.gz/.tgz/.zip holding one) "
        "into this home. Never overwrites; dry-run unless --apply."))
    p.add_argument("--from", dest="src", required=True, metavar="SRC",
                   help="the other home: its folder, or an archive holding it (only read, never changed).")
    p.add_argument("--codex-dir", metavar="DIR",
                   help="the home to import into (default: $CODEX_HOME, else ~/.codex).")
    p.add_argument("--sqlite-home", metavar="DIR",
                   help="folder holding this home's state_5.sqlite (default: as Codex finds it).")
    p.add_argument("--remap-prefix", metavar="OLD=NEW", action="append", default=[],
                   help="rewrite the threads' folders (cwd, in the row and in line 1) starting with OLD "
                        "to start with NEW, e.g. the old user home to this one (repeatable).")
    p.add_argument("--thread-id", metavar="ID", action="append", default=[], type=thread_id_arg,
                   help="only this thread (repeatable); a fork's parent comes along when needed.")
    p.add_argument("--apply", action="store_true", help="write (default: show the plan only).")
    p.add_argument("--force", action="store_true", help="apply even though Codex seems to be running.")
    p.add_argument("--sample", type=positive_int, default=20, metavar="N",
                   help="threads shown per list (default: 20).")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the text report.")
    p.add_argument("--verbose", action="store_true", help="also print the plan's and the result's raw counters.")
    return p.parse_args(argv)


def _label(t: Dict[str, Any]) -> str:
    """An imported session as the picker will show it: name else title, date, folder."""
    folder = shown(t["folder"]) if t["folder"] == t["folder_before"] else \
        f"{shown(t['folder_before'])} -> {shown(t['folder'])}"
    return f"{label(t.get('name'), t.get('title'))}, {t['created'] or '?'}, {folder or '(no folder)'}"


PER_THREAD = 5  # up to this many sessions, each says what comes with it; more: one summary for all
REASONS = 8  # reasons listed in the summary; the rest are counted (--json lists them)


def _extras(t: Dict[str, Any]) -> List[str]:
    """What comes with one session (its project, section, goal, ...) and what it cannot bring, why."""
    from sessionkit.ui.results import wrap  # the text report's only: --json loads none of it
    out = wrap("    comes with: " + ", ".join(shown(x) for x in t["comes_with"]), "        ") if t["comes_with"] else []
    return out + [line for why in t["cannot_bring"] for line in wrap(f"    cannot bring: {shown(why)}", "        ")]


def _extras_summary(r: Dict[str, Any]) -> List[str]:
    """For many sessions: what comes with them all, and each reason something cannot come, counted."""
    from sessionkit.ui.results import wrap
    out = wrap("  with them: " + ", ".join(shown(x) for x in r["comes_with"]), "      ") if r["comes_with"] else []
    reasons = r.get("cannot_bring_reasons") or []
    if reasons:
        out.append(f"  cannot bring ({r['cannot_bring']}; left in the source):")
        for why, n in reasons[:REASONS]:
            out += wrap(f"    {shown(why)}" + (f" ({n} sessions)" if n > 1 else ""), "        ")
        if len(reasons) > REASONS:
            out.append(f"    (and {len(reasons) - REASONS} more reasons; --json lists them)")
    return out


def render(codex_dir: str, r: Dict[str, Any], result: Optional[Dict[str, Any]], dry_run: bool,
           home: Optional[CodexHome] = None, verbose: bool = False) -> str:
    out = ["=== Session Import Plan ===", f"codex_dir: {codex_dir}",
           f"source: {shown(r['source'])} ({r['source_kind']})", f"dry_run: {dry_run}"]
    out.append(f"sessions in the source: {r['threads_in_source']}; to import: {r['to_import']} "
               f"({r['to_import_archived']} archived); already here: {r['already_present']}; "
               f"skipped: {r['skipped']}; conflicts: {r['conflicts']}")
    if verbose:
        for k in ("files_to_copy", "line1_rewrites", "history_turns_to_copy", "remapped_threads"):
            out.append(f"{k}: {r[k]}")
    if r["remaps"]:
        out.append("remap: " + ", ".join(shown(x) for x in r["remaps"]))
    for note in r["notes"]:
        out.append(f"note: {shown(note)}")
    if r["provider_hint"]:
        out.append(f"provider: {shown(r['provider_hint'])}")
    per_thread = len(r["imports_sample"]) <= PER_THREAD and r["to_import"] <= PER_THREAD
    for t in r["imports_sample"]:
        extra = ", archived" if t["archived"] else ""
        extra += f", {len(t['files'])} files" if len(t["files"]) > 1 else ""
        extra += f", {t['why']}" if t["why"] not in ("in the source", "chosen") else ""
        out.append(f"  import {_label(t)}  ({shown(t['provider'])}{extra})")
        out += [f"    note: {shown(n)}" for n in t["notes"]]
        if per_thread:
            out += _extras(t)
    if not per_thread:
        out += _extras_summary(r)
    for s in r["skipped_sample"]:
        out.append(f"  skipped {short_title(s['title'])} [{s['thread_id']}]: {shown(s['reason'])}")
    for s in r["conflicts_sample"]:
        out.append(f"  CONFLICT {short_title(s['title'])} [{s['thread_id']}]: {shown(s['reason'])}")
    if result is None:
        if dry_run and r["to_import"]:
            out.append("No changes applied (dry-run). Run next:" if r["next_commands"] else
                       "No changes applied (dry-run).")
        else:
            out.append("Nothing to import.")
        out += [f"  {c}" for c in r["next_commands"]]
        return Lines(out)
    from sessionkit.ui.results import Outcome, render as render_outcome
    failed = {s["thread_id"] for s in result.get("skipped_at_apply") or []}
    done = [t for t in r["imports_sample"] if t["thread_id"] not in failed]
    n = result.get("imported_threads", len(done))
    from sessionkit.runlog.runs import older_runs  # only with a result to show: a dry-run never loads it
    outcome = Outcome(
        heading="Session Import Result",
        done=f"Done: {n} session{'s' if n != 1 else ''} imported" + (":" if done else "."),
        changed=[_label(t) for t in done],
        skipped=[(s["thread_id"], s["reason"]) for s in result.get("skipped_at_apply") or []],
        notes=(["Then move them to this home's provider (a dry-run first):"]
               + [f"  {c}" for c in r["next_commands"] if "provider_migrate.py" in c]
               if any("provider_migrate.py" in c for c in r["next_commands"]) else []),
        undo=result.get("rollback"),
        verify=home_command(home, "session_audit.py") if home is not None else None,
        older=older_runs(home, result.get("run_dir")) if home is not None else [],
        counters={k: v for k, v in result.items() if k != "rollback"})
    if r["to_import"] > len(r["imports_sample"]):
        outcome.changed.append(f"(and {r['to_import'] - len(r['imports_sample'])} more; --json lists them)")
    return Lines(out + [""] + render_outcome(outcome, verbose))


def next_commands(home: Any, args: Any, plan: Any) -> List[str]:
    """Pasteable commands for what to run next: the suggested remap, the apply, the provider move."""
    src = os.path.abspath(args.src)
    remaps = [w for r in args.remap_prefix for w in ("--remap-prefix", r)]
    picked = [w for t in args.thread_id for w in ("--thread-id", t)]
    out = []
    if plan.suggested_remap_args:
        out.append(home_command(home, "session_import.py", "--from", src, *plan.suggested_remap_args, *picked))
    elif plan.imports and not args.apply:
        out.append(home_command(home, "session_import.py", "--from", src, *remaps, *picked, "--apply"))
    if plan.provider_args:
        out.append(home_command(home, "provider_migrate.py", *plan.provider_args))
    return out


def scratch_parent(home: CodexHome) -> Path:
    """With --apply the scratch folder (archive members, staged remapped files) lives in the home's
    own artifacts folder, so a run writes nothing outside the home; a dry-run writes nothing in it."""
    folder = home.artifacts_dir
    if not resolves_inside(folder.parent, home.root):
        raise UserError(f"{folder.parent} leads outside the Codex home; refusing to write there")
    return folder  # made by make_scratch, once SRC is known to be readable


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    remaps = parse_remaps(args.remap_prefix)
    home = open_home(args.codex_dir, args.sqlite_home)
    from sessionkit.codexfiles.paths import safe_str
    from sessionkit.codexfiles.rollout_index import not_unicode
    if not_unicode(str(home.root)):  # every imported row would name a path Codex cannot store as text
        raise UserError(f"this Codex home's path {safe_str(home.root)} is not valid UTF-8: Codex keeps each "
                        "session's path as UTF-8 text, so nothing can be imported into it (rename the folder)")
    progress = Progress.for_terminal()
    with progress.working(f"reading {shown(os.path.basename(os.path.abspath(args.src)))}"):
        if os.path.isfile(os.path.expanduser(args.src)):  # a folder's import loads no archive module
            from sessionkit.fixes.export import verify_if_export
            verify_if_export(args.src)  # an export of session_export.py: every member as its manifest says
        source = open_source(args.src, scratch_parent(home) if args.apply else None)
    with source:
        if os.path.realpath(str(source.root)) == os.path.realpath(str(home.root)):
            raise UserError("--from names this same home; nothing to import")
        collecting = gc.isenabled()
        gc.disable()  # as the audit's gather: many small acyclic objects, no cycle to collect meanwhile
        try:
            with progress.working("reading the source's sessions"):
                src = read_source(source, in_place=not args.apply)  # a dry-run copies no DB
            with progress.working("reading this home's sessions"):
                dest = read_dest(home)
            with progress.working("planning the import"):
                plan = plan_import(src, dest, remaps, args.thread_id)
        finally:
            gc.freeze()  # the plan lives to the end: later collections need not walk it again
            if collecting:
                gc.enable()
        report = plan_report(plan, args.sample)
        report["next_commands"] = next_commands(home, args, plan)
        result = None
        if args.apply and plan.imports:
            from sessionkit.fixes.import_apply import apply_import
            result = apply_import(plan, args.force, progress)
    if args.json:
        print_json({"codex_dir": str(home.root), **report, "dry_run": not args.apply, "result": result})
    elif not plan.imports and not plan.conflicts and not any(
            not s.reason.startswith("already in DEST") for s in plan.skipped):
        from sessionkit.ui.results import nothing_to_do
        emit(nothing_to_do(f"all {plan.threads_in_source} session(s) of {shown(args.src)} are already here"
                           if plan.threads_in_source else f"{shown(args.src)} holds no session"))
    else:
        emit(render(str(home.root), report, result, not args.apply, home, args.verbose))
    return EXIT_FINDINGS if (plan.conflicts or any(not s.reason.startswith("already in DEST")
                                                   for s in plan.skipped)) else EXIT_CLEAN


if __name__ == "__main__":
    raise SystemExit(run(main))
