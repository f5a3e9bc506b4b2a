#!/usr/bin/env python3
"""Read-only audit of a Codex home: why are sessions missing from the resume list?

Never writes: not the state DB (opened read-only, no -wal/-shm created), not a file, not an mtime.
Exit codes: 0 nothing wrong, 1 findings, 2 error.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Any, Dict, List, Optional

sys.dont_write_bytecode = True  # no __pycache__ inside the Codex home (the skill lives there)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sessionkit import EXIT_CLEAN, EXIT_FINDINGS, Lines  # noqa: E402
from sessionkit.diagnose.audit import INTEGRITY_KEYS, build_report  # noqa: E402
from sessionkit.fixes.advice import WAIT_REASON, next_steps, unarchive_option, unfixable  # noqa: E402
from sessionkit.diagnose.snapshot import gather  # noqa: E402
from sessionkit.ui.cli import (Parser, absolute_path_arg, add_home_args, emit, positive_int, print_json,  # noqa: E402
                            provider_arg, run)
from sessionkit.codexfiles.home import open_home  # noqa: E402
from sessionkit.ui.labels import shown  # noqa: E402
from sessionkit.ui.progress import Progress  # noqa: E402


def parse_args(argv: Optional[List[str]]) -> Any:
    parser = Parser(prog="session_audit.py", description=(
        "Read-only audit of a Codex home: counts, integrity between the state DB and the rollout "
        "files, what the default resume list shows and why the rest is hidden, orphan rollouts, "
        "and whether Codex is running. Changes nothing."))
    add_home_args(parser)
    parser.add_argument("--sample", "--max-samples", dest="max_samples", type=positive_int, default=10,
                        metavar="N", help="thread ids kept per category in --json (default: 10).")
    parser.add_argument("--verbose", action="store_true",
                        help="print every counter, zeros included, after the diagnosis.")
    parser.add_argument("--provider", metavar="ID", type=provider_arg,
                        help="judge visibility for this model_provider instead of the one in config.toml.")
    parser.add_argument("--cwd", metavar="DIR", type=absolute_path_arg,
                        help="the project folder to judge: what the TUI picker (`codex resume`) shows there "
                             "and the editors' listing filtered to it (default: the current folder when "
                             "sessions were recorded there).")
    return parser.parse_args(argv)


WIDTH = 100  # a terminal line; only pasteable commands and paths that are the point may be longer

# Why the editors' list hides a session, in the user's words; {p} is the current provider.
HIDDEN_WORDS = {
    "archived": ("is archived", "are archived", " (shown under Archived)"),
    "missing_rollout_file": ("has", "have", " no session file left in sessions/"),
    "other_provider": ("was", "were", " made under another provider ({others}); the editors list only {p}'s"),
    "non_interactive_source": ("was", "were", " started by `codex exec` or a subagent (never listed)"),
    "cwd": ("belongs", "belong", " to another folder than {cwd}"),
    "cwd_folder_gone": ("was", "were", " recorded in folders that no longer exist"),
    "line1_unreadable": ("has", "have", " an unreadable first line (Codex lists none of those)"),
    "only_session_meta": ("was", "were", " opened and closed without a prompt (Codex lists none of those)"),
}
# The same, in a few words, for the surfaces after the first.
SHORT_WORDS = {"cwd": "in other folders", "other_provider": "of other providers",
               "archived": "archived", "non_interactive_source": "from `codex exec`",
               "missing_rollout_file": "without a file", "cwd_folder_gone": "in folders that are gone",
               "line1_unreadable": "unreadable", "only_session_meta": "without a prompt",
               "rollout_not_indexed": "not in Codex's index", "empty_preview": "without a title",
               "stale_rollout_path": "whose file moved away"}
# Why the index (state_5.sqlite) is behind for a listed session, in a few words each.
INDEX_WORDS = {
    "rollout_not_indexed": "not in it", "stale_rollout_path": "file moved",
    "empty_preview": "no title", "db_provider_differs": "old provider",
}
# Integrity counters with one plain explanation; a pair that looks the same to a user shares a line.
INTEGRITY_WORDS = (
    (("disk_not_in_db", "missing_active_rows", "missing_archived_rows"),
     "session files with no index entry"),
    (("db_not_on_disk",), "index entries whose session has no file anywhere"),
    (("missing_rollout_path", "stale_rows"), "index entries whose file is not at the recorded path"),
    (("rollout_path_outside_home",), "index entries pointing outside this home"),
    (("duplicate_rollout_id",), "sessions with more than one file"),
    (("archive_mismatches",), "archived flag disagrees with the file's folder"),
    (("duplicate_db_paths",), "file paths shared by several index entries"),
    (("session_meta_id_mismatch",), "index entries pointing at another session's file"),
    (("provider_mismatch",), "index says another provider than the file (Codex follows the file)"),
    (("malformed_file_names",), "files in sessions/ whose name Codex cannot read (ignored by Codex)"),
    (("line1_unreadable",), "session files whose first line is unreadable (never listed)"),
    (("compressed_rollouts",), "zstd-compressed session files (Codex reads them; a run that changes one decompresses it)"),
    (("unreadable_paths",), "folders that could not be read, or symlinked folders (not followed)"),
)


def _wrap(text: str, indent: str = "  ", width: int = WIDTH) -> List[str]:
    """A long line wrapped at spaces, never cut: every word stays whole (a path may be longer)."""
    import textwrap  # only for the text report (not --json)
    return textwrap.wrap(text, width=width, subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False) or [text]


ROLLOUT_NAME = re.compile(r"\S*rollout-\d{4}-\d\d-\d\dT[\d-]+-([0-9a-fA-F-]{36})\.jsonl(\.zst)?")


def _short(item: str, home: str) -> str:
    """A sample as a user knows it: a rollout file by its session id, another path inside the home
    without the home's prefix (the full lists are in --json)."""
    prefix = home.rstrip("/") + "/"  # first: a home whose path holds a space is still cut off
    item = item.replace(prefix, "") if prefix in item else item
    return ROLLOUT_NAME.sub(lambda m: m.group(1) + (" (.zst)" if m.group(2) else ""), item)


def _samples(items: List[str], home: str, indent: str = "      e.g. ") -> List[str]:
    """As many whole samples as fit on one line, then how many more there are."""
    if not items:
        return []
    line = indent
    for n, item in enumerate(items):
        text = _short(item, home)
        rest = f" (+{len(items) - n} more)" if n else ""
        if n and len(line) + 2 + len(text) + len(rest) > WIDTH:
            return [line + rest]
        line += (", " if n else "") + text
    return [line]


def _n(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _surfaces(r: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Each surface the report judges: its label, how many it shows, and hidden counts by reason.
    Reads `surfaces` when the report has it (per-surface keys), else the editors' `visibility`."""
    out: List[Dict[str, Any]] = []
    raw = r.get("surfaces")
    entries = list(raw.items()) if isinstance(raw, dict) else \
        [(e.get("name", "?"), e) for e in raw] if isinstance(raw, list) else []
    for name, s in entries:
        if not isinstance(s, dict):
            continue
        shown = next((s[k] for k in ("visible", "shown", "listed", "count") if isinstance(s.get(k), int)), None)
        if shown is None:
            continue
        if name not in FIRST_SCREEN_SURFACES:
            continue
        label = SURFACE_LABELS.get(name) or s.get("label") or str(name).replace("_", " ")
        if s.get("cwd") and "{cwd}" in label:
            label = label.replace("{cwd}", str(s["cwd"]))
        out.append({"name": name, "label": label, "shown": shown,
                    "hidden": s.get("hidden") if isinstance(s.get("hidden"), dict) else {}})
    if any(s["name"] == "tui" for s in out):  # `--all` only when there is no folder to judge
        out = [s for s in out if s["name"] != "tui_all"]
    if not out:
        vis = r.get("visibility") or {}
        where = f" in {vis['cwd']}" if vis.get("cwd") else ""
        out.append({"name": "editors", "label": f"the editors' list (VS Code, desktop app){where}",
                    "shown": vis.get("visible", 0), "hidden": vis.get("hidden") or {}})
    return out


FIRST_SCREEN_SURFACES = ("editors", "tui", "tui_all")
SURFACE_LABELS = {
    "editors": "the editors' list (VS Code, desktop app)",
    "tui": "the TUI picker (`codex resume`) in {cwd}",
    "tui_all": "`codex resume --all`",
}


STOP_WORDS = "; stop it with: "  # how locks.py's describe() ends a holder that has a stop command


def running_lines(r: Dict[str, Any]) -> List[str]:
    """What runs on this home, said in full once (locks.py words each holder), and the sessions
    the history check could not read because Codex holds them open."""
    running = r.get("codex_running") or {}
    out: List[str] = []
    if running.get("running"):
        out.append("Codex is running on this home; close it before any --apply:")
        stops: List[str] = []
        for h in [str(h) for h in running.get("holders") or []]:
            words, sep, stop = h.partition(STOP_WORDS)  # the command on a line of its own, once
            out += _wrap("  " + words.rstrip(";, "), "      ")
            if sep and stop.strip() and stop.strip() not in stops:
                stops.append(stop.strip())
        if running.get("daemon_stop") and running["daemon_stop"] not in stops:
            stops.append(running["daemon_stop"])
        for stop in stops:
            out += ["  stop it with:", f"    {stop}"]
    skipped = (r.get("integrity") or {}).get("history_skipped_live", 0)
    if skipped:
        out.append(f"{_n(skipped, 'session open in Codex was', 'sessions open in Codex were')} not checked "
                   "(audit again once Codex is closed).")
    return out


def daemon_line(r: Dict[str, Any]) -> List[str]:
    """A moved home's daemon link: the 0.171 TUI does not start until it is re-pointed."""
    pkg = r.get("daemon_package") or {}
    problem = str(pkg.get("problem") or "")
    if not problem or "does not exist" not in problem and "outside" not in problem:
        return []
    if pkg.get("repoint_to") and (r.get("integrity") or {}).get("moved_home"):
        return ["Codex will not start here: its daemon link points into the old home; the repair fixes it."]
    return _wrap("Codex will not start here: its daemon link points at a folder that is gone "
                 "(`codex --no-daemon` still starts); --verbose shows the link.", "  ")


def diagnosis(r: Dict[str, Any]) -> List[str]:
    """The first lines: how many sessions, what runs, what each surface shows, why the rest is hidden."""
    vis = r.get("visibility") or {}
    counts = r.get("counts") or {}
    integ = r.get("integrity") or {}
    provider = vis.get("provider") or (r.get("config") or {}).get("model_provider", "?")
    source = (r.get("config") or {}).get("provider_source", "")
    total = counts.get("threads_total", 0) + integ.get("disk_not_in_db_count", 0)
    out = [f"=== Codex Session Audit: {r.get('codex_dir')} ==="]
    archived = counts.get("threads_archived", 0)
    unindexed = integ.get("disk_not_in_db_count", 0)
    parts = [f"{counts.get('threads_total', 0)} in Codex's index, {unindexed} only as files"] if unindexed else []
    if archived:
        parts.append(f"{archived} archived")
    out += _wrap(_n(total, "session", "sessions") + (f" ({'; '.join(parts)})" if parts else "")
                 + f"; current provider: {provider}" + (" (default)." if source == "default" else "."), "  ")
    out += running_lines(r) + daemon_line(r)
    surfaces = _surfaces(r)
    for s in surfaces:
        out += _wrap(f"{s['label'][0].upper() + s['label'][1:]} shows {s['shown']}.", "  ")
    others = [p for p in ((r.get("distribution") or {}).get("model_provider") or {}) if p != provider]
    hidden = surfaces[0]["hidden"]
    why: List[str] = []
    for reason, n in hidden.items():
        if not n:
            continue
        one, many, rest = HIDDEN_WORDS.get(reason, ("is", "are", " hidden: " + reason.replace("_", " ")))
        why += _wrap(f"  {n} {one if n == 1 else many}" + rest.format(
            p=shown(provider), others=", ".join(shown(o) for o in others[:3]) or "another",
            cwd=shown(vis.get("cwd")) or "this one"), "      ")
    for s in surfaces[1:]:  # what this surface misses beyond what the first one misses
        extra = [f"{n - hidden.get(reason, 0)} {SHORT_WORDS.get(reason, reason.replace('_', ' '))}"
                 for reason, n in s["hidden"].items() if isinstance(n, int) and n > hidden.get(reason, 0)]
        if extra:
            why += _wrap(f"  {s['label'][0].upper() + s['label'][1:]} misses " + ", ".join(extra), "      ")
    behind = {k: n for k, n in (vis.get("db_only_hidden") or {}).items() if n}
    if behind:
        why += _wrap(f"  {sum(behind.values())} listed but out of date in Codex's index ("
                     + ", ".join(f"{n} {INDEX_WORDS.get(k, k.replace('_', ' '))}" for k, n in behind.items())
                     + ")", "      ")
    moved = integ.get("moved_home")
    if moved:
        why += _wrap(f"  {_n(moved.get('rows') or 0, 'index entry points', 'index entries point')} "
                     f"into an old home ({moved.get('old_prefix')})", "      ")
    unbuilt = (integ.get("history_incomplete_by_kind") or {}).get("no_history_db", 0)
    if unbuilt:  # history_check.NO_HISTORY_DB: readable once opened, nothing lost
        why += _wrap(f"  {_n(unbuilt, 'session shows', 'sessions show')} 0 turns until opened once in Codex "
                     "(no stored history here yet; the session file holds every turn)", "      ")
    no_cfg = vis.get("providers_without_config") or []
    if no_cfg:
        why += _wrap("  resuming fails for provider(s) config.toml does not define: "
                     + ", ".join(shown(p) for p in no_cfg), "      ")
    if why:
        out.append("Hidden or at risk:")
        out += why
    return out


def advice(r: Dict[str, Any]) -> List[str]:
    """The last lines, so they stay on screen: what nothing can fix, what to run, what is optional."""
    out: List[str] = []
    stuck = r.get("unfixable") or []
    if stuck:
        out.append("No command here can fix these (nothing is suggested for them):")
        for g in stuck:
            n, names = g.get("count", 0), g.get("sessions") or []
            if g.get("reason") == WAIT_REASON:
                out += _wrap(f"  {_n(n, 'session file was', 'session files were')} written in the last "
                             "minutes (maybe still in use): audit again later", "      ")
            elif n == 1 and names:
                out += _wrap(f"  {names[0]}: {g.get('reason')}", "      ")
            else:
                out += _wrap(f"  {n} sessions: {g.get('reason')} (e.g. {'; '.join(names)})", "      ")
    steps = r.get("next_steps") or []
    if steps:
        out.append("Run next (it shows its plan; add --apply to write, then audit again):")
        out += [f"  {s['command']}  # {shown(s['why'])}" for s in steps]
    if not steps:
        out.append("Nothing to run: no command here would change anything." if r.get("findings") else
                   "Nothing is hidden and the index matches the files: nothing to run.")
    for o in r.get("options") or []:
        out.append(f"Optional, {shown(o['why'])}:")
        out.append(f"  {o['command']}")
    return out


# Counters whose sessions or files no other line names: one line of samples under them.
SAMPLED = ("malformed_file_names", "unreadable_paths", "history_incomplete", "names_lost")


def details(r: Dict[str, Any]) -> List[str]:
    """The counters that are not zero, each once, under the design's names (--verbose: all, with samples)."""
    out = ["Details (only what is not zero; --verbose shows every counter and samples, --json all):"]
    for name, dist in (r.get("distribution") or {}).items():
        if dist and name in ("model_provider", "cwd"):
            out += _wrap(f"  {name}: " + ", ".join(f"{shown(k) or '<empty>'} {v}" for k, v in dist.items()), "      ")
    integ = r.get("integrity") or {}
    home = str(r.get("codex_dir") or "")
    listed = set()
    for keys, words in INTEGRITY_WORDS:
        listed.update(keys)
        nums = [(k, integ.get(f"{k}_count", 0)) for k in keys]
        if not any(n for _, n in nums):
            continue
        names = "  " + ", ".join(f"{k}: {n}" for k, n in nums if n)
        out += [names + f"   {words}"] if len(names) + 3 + len(words) <= WIDTH else [names, f"      {words}"]
        if keys[0] in SAMPLED:
            out += _samples(integ.get(f"{keys[0]}_sample") or [], home)
    for key, value in integ.items():  # counters added later: shown by name
        if key.endswith("_count") and value and key[:-6] not in listed:
            out.append(f"  {key[:-6]}: {value}")
            if key[:-6] in SAMPLED:
                out += _samples(integ.get(key[:-6] + "_sample") or [], home)
    orph = r.get("orphans") or {}
    if orph.get("count"):
        out.append(f"  orphans: {orph['count']} (importable {orph.get('importable', 0)}, "
                   f"ACTIVE_ORPHAN {orph.get('active_orphans', 0)})")
    for other in r.get("other_state_dbs") or []:
        c = other.get("counts") or {}
        out += _wrap(f"  other state DB: {_short(other.get('path', ''), home)} "
                     f"({c.get('threads_total', other.get('error', '?'))} threads; {other.get('reason')})", "      ")
    live = r.get("live_current_session")
    if live:
        out.append(f"  live current session (the agent running this audit): {live.get('thread_id')}")
    return out if len(out) > 1 else []


def render_text(r: Dict[str, Any], verbose: bool = False) -> str:
    """The diagnosis first, the counters (each once), and the advice last so the commands stay in view;
    --verbose puts every counter, with samples, before the advice."""
    middle = render_verbose(r) if verbose else details(r) if r.get("findings") else []
    out = diagnosis(r) + ([""] + middle if middle else []) + [""] + advice(r)
    return Lines(out)


def render_verbose(r: Dict[str, Any]) -> List[str]:
    """Everything, as before the first screen existed (--verbose)."""
    out: List[str] = ["Every counter:", f"codex_dir: {r['codex_dir']}",
                      f"state_db: {r['state_db']['path']}  ({r['state_db']['reason']})"]
    for other in r["other_state_dbs"]:
        extra = other.get("counts") or {"error": other.get("error")}
        out.append(f"other state DB: {other['path']}  ({other['reason']}) {extra}")
    cfg = r["config"]
    out.append(f"current provider: {cfg['model_provider']}  (from {cfg['provider_source']})")
    run_info = r["codex_running"]
    if run_info["running"]:
        out.append("WARNING: Codex is running against this home; stop it before any --apply:")
        out += [f"  {h}" for h in run_info["holders"]]
    live = r["live_current_session"]
    if live:
        out.append(f"live current session (the agent running this audit): {live['thread_id']}"
                   f" ({'indexed' if live['has_row'] else 'not indexed yet'}; never touched by these scripts)")
    out += ["", "counts:"] + [f"  {k}: {v}" for k, v in r["counts"].items()]
    for name, dist in r["distribution"].items():
        out += ["", f"{name} distribution:"] + [f"  {shown(k) or '<empty>'}: {v}" for k, v in dist.items()]
    integ = r["integrity"]
    out += ["", "integrity:"]
    for key in INTEGRITY_KEYS:
        n = integ[f"{key}_count"]
        line = f"  {key}_count: {n}"
        if n:
            line += "   e.g. " + ", ".join(integ[f"{key}_sample"][:3])
        out.append(line)
    if integ.get("moved_home"):
        m = integ["moved_home"]
        out.append(f"  moved home: rows point under {m['old_prefix']}; this home is {m['new_prefix']}")
        out.append(f"    fix: {m.get('command') or m['remap_arg']}")
    vis = r["visibility"]
    where = f", cwd {vis['cwd']}" if vis["cwd"] else ""
    out += ["", f"visibility (default thread/list for provider {vis['provider']}{where}):",
            f"  visible: {vis['visible']}", f"  hidden: {vis['hidden_total']}"]
    for reason, n in vis["hidden"].items():
        if n:
            out.append(f"    {reason}: {n}   e.g. " + ", ".join(vis["hidden_sample"][reason][:3]))
    out.append(f"  visible in a DB-only listing (useStateDbOnly): {vis['visible_db_only']}")
    for reason, n in vis["db_only_hidden"].items():
        if n:
            out.append(f"    {reason}: {n}   e.g. " + ", ".join(vis["db_only_hidden_sample"][reason][:3]))
    if vis["providers_without_config"]:
        out.append("  providers with no [model_providers] entry (resume fails): "
                   + ", ".join(vis["providers_without_config"]))
    orph = r["orphans"]
    out += ["", f"orphans: {orph['count']} (importable {orph['importable']}, "
                f"ACTIVE_ORPHAN {orph['active_orphans']})"]
    for e in orph["active_orphan_sample"]:
        out.append(f"  {e['thread_id']}: {e['reason']}")
    pkg = r.get("daemon_package")
    if pkg:
        out.append(f"daemon link: {pkg.get('path')} -> {pkg.get('target')}"
                   + (f" ({pkg['problem']})" if pkg.get("problem") else "")
                   + (f"; the repair re-points it to {pkg['repoint_to']}" if pkg.get("repoint_to") else ""))
    out += ["", "findings:"] + [f"  - {f}" for f in r["findings"]] if r["findings"] else ["", "findings: none"]
    return out


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    home = open_home(args.codex_dir, args.sqlite_home)
    inputs = gather(home, Progress.for_terminal())
    report = build_report(inputs, provider=args.provider, cwd=args.cwd, max_samples=args.max_samples)
    report["next_steps"] = next_steps(report, home, inputs)
    report["options"] = [o for o in [unarchive_option(report, home)] if o]
    report["unfixable"] = unfixable(report, inputs)
    if args.json:
        print_json(report)
    else:
        emit(render_text(report, args.verbose))
    return EXIT_FINDINGS if report["findings"] else EXIT_CLEAN


if __name__ == "__main__":
    raise SystemExit(run(main))
