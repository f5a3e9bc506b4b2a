"""What each Codex surface lists (editors' thread/list, the TUI picker in a folder, `resume --all`),
why each missing session is missing there, and the moved-home story behind a `cwd` that is gone."""
from __future__ import annotations

import os
from collections import Counter
from operator import itemgetter
from typing import Any, Dict, List, Optional, Tuple

from sessionkit.codexfiles.paths import has_prefix, home_prefix_counts, is_inside, normalize_for_match, replace_prefix, safe_str, \
    split_home_prefix
from sessionkit.diagnose.snapshot import AuditInputs
from sessionkit.codexfiles.versions import ACCOUNT_FIELDS_HIDE, CWD_FROM_LINE1, DAEMON_PACKAGE_LINK, INTERACTIVE_SOURCE_KINDS, \
    META_ONLY_LISTED, SURFACES, UNREADABLE_LINE1_LISTED, Surface

INTERACTIVE_SOURCES = INTERACTIVE_SOURCE_KINDS
# the first reason that hides a thread, in this order: the editors' thread/list (reads rollouts)...
HIDE_REASONS = ("archived", "missing_rollout_file", "line1_unreadable", "only_session_meta",
                "other_provider", "non_interactive_source", "cwd", "cwd_folder_gone")
# ... and the TUI picker (reads rows)
TUI_REASONS = ("rollout_not_indexed", "archived", "non_interactive_source", "empty_preview",
               "missing_rollout_file", "stale_rollout_path", "line1_unreadable", "cwd", "cwd_folder_gone")


class Judged:
    """One thread as the listings see it. Slotted: one per thread."""

    __slots__ = ("tid", "base", "provider", "source", "cwd")

    def __init__(self, tid: str, base: Optional[str], provider: Optional[str], source: str, cwd: str) -> None:
        self.tid = tid  # as the DB spells it (lower-case for unindexed rollouts)
        self.base = base  # a reason that hides it from every surface, or None
        self.provider = provider  # line 1's provider; None: counts as the current one
        self.source = source
        self.cwd = cwd  # line 1's cwd (what Codex filters on), else the row's


def judge_all(inputs: AuditInputs) -> List[Judged]:
    """Every row, and every active rollout with no row (a default listing indexes it), judged once."""
    out: List[Judged] = []
    by_thread, rows_by_id, metas, heads = inputs.index.by_thread, inputs.rows_by_id, inputs.metas, inputs.heads
    candidates: List[Tuple[str, Any, str]] = [(r.id, r, r.key) for r in inputs.rows]  # (shown id, row, key)
    for tid, files in by_thread.items():
        if tid not in rows_by_id and any(not f.archived for f in files):
            candidates.append((tid, None, tid))
    candidates.sort(key=_first)  # rows come sorted: one pass
    listed_unreadable, cwd_from_line1, meta_only_listed = \
        UNREADABLE_LINE1_LISTED.value, CWD_FROM_LINE1.value, META_ONLY_LISTED.value
    for tid, row, key in candidates:
        source = row.source_kind if row is not None else ""
        every = by_thread.get(key, ())
        files = [f for f in every if not f.archived]
        if not files:  # a row flagged archived whose file is in sessions/ is listed (measured, 0.169)
            archived = (row is not None and row.archived) or any(f.archived for f in every)
            out.append(Judged(tid, "archived" if archived else "missing_rollout_file", None, source,
                              row.cwd if row else ""))
            continue
        rf = files[0]
        meta = metas[rf.key]
        if meta.error is not None and not listed_unreadable:
            out.append(Judged(tid, "line1_unreadable", None, source, row.cwd if row else ""))
            continue
        if row is None:
            source = meta.source_kind
        cwd = meta.cwd if (meta.cwd is not None and cwd_from_line1) else (row.cwd if row else "")
        head = heads.get(rf.key)
        base = "only_session_meta" if head is not None and head.only_meta and not meta_only_listed else None
        out.append(Judged(tid, base, meta.model_provider if meta.has_provider else None, source, cwd))
    return out


_first = itemgetter(0)


def judge_rows(inputs: AuditInputs) -> List[Judged]:
    """Every row as the TUI picker sees it (0.171: rows, the row's cwd, any provider), and every
    rollout with no row, which the picker never shows."""
    out: List[Judged] = []
    root = inputs.home.root
    by_path, metas = inputs.index.by_path, inputs.metas
    for r in inputs.rows:  # sorted by id (AuditInputs)
        base: Optional[str] = None
        rf = by_path.get(r.rollout_path)
        if r.archived:
            base = "archived"
        elif r.source_kind not in INTERACTIVE_SOURCES:
            base = "non_interactive_source"
        elif r.preview is not None and not r.preview.strip():
            base = "empty_preview"
        elif rf is None:
            rf = _same_place_in_this_home(inputs, r.rollout_path, root)
            if rf is None and not inputs.path_exists(r.rollout_path):
                base = "stale_rollout_path" if inputs.files_for(r.key) else "missing_rollout_file"
        if base is None and rf is not None and metas[rf.key].error is not None:
            base = "line1_unreadable"
        out.append(Judged(r.id, base, None, r.source_kind, r.cwd))
    for tid, files in inputs.index.by_thread.items():
        if tid not in inputs.rows_by_id and any(not f.archived for f in files):
            out.append(Judged(tid, "rollout_not_indexed", None, "", ""))
    return out


def _same_place_in_this_home(inputs: AuditInputs, path: str, root: Any) -> Optional[Any]:
    """A row's rollout_path from a moved home: the file at the same `sessions/...` path here."""
    split = split_home_prefix(path) if path and "\x00" not in path else None
    if split is None:
        return None
    return inputs.index.by_path.get(os.path.join(str(root), split[1]))


class _Folders:
    """Does a cwd folder still exist? Asked once per distinct folder."""

    def __init__(self) -> None:
        self.seen: Dict[str, bool] = {}

    def gone(self, path: str) -> bool:
        if path not in self.seen:
            ok = bool(path) and "\x00" not in path and os.path.isabs(path)
            self.seen[path] = not (ok and os.path.isdir(path))
        return self.seen[path]


def view(judged: List[Judged], provider: Optional[str], cwd: Optional[str],
         folders: Optional[_Folders] = None, reasons: Tuple[str, ...] = HIDE_REASONS
         ) -> Tuple[List[str], Dict[str, List[str]]]:
    """(listed ids, hidden ids by reason) for one surface: `provider` None = every provider,
    `cwd` None = every folder."""
    folders = folders or _Folders()
    hidden: Dict[str, List[str]] = {k: [] for k in reasons}
    visible: List[str] = []
    want = normalize_for_match(cwd) if cwd is not None else None
    for j in judged:
        if j.base is not None:
            hidden[j.base].append(j.tid)
        elif provider is not None and j.provider is not None and j.provider != provider:
            hidden["other_provider"].append(j.tid)
        elif j.source not in INTERACTIVE_SOURCES:
            hidden["non_interactive_source"].append(j.tid)
        elif want is not None and j.cwd != cwd and normalize_for_match(j.cwd) != want:
            hidden["cwd_folder_gone" if folders.gone(j.cwd) else "cwd"].append(j.tid)
        else:
            visible.append(j.tid)
    return visible, hidden


def listed(inputs: AuditInputs, surface: str, provider: str, cwd: Optional[str] = None) -> List[str]:
    """The ids one surface (`editors`, `tui`, `tui_all`) lists; the report gives counts and samples."""
    s = next(x for x in SURFACES if x.name == surface)
    judged = judge_rows(inputs) if s.reads == "rows" else judge_all(inputs)
    reasons = TUI_REASONS if s.reads == "rows" else HIDE_REASONS
    return view(judged, provider if s.current_provider_only else None, cwd, None, reasons)[0]


def db_only_ids(inputs: AuditInputs, provider: str, cwd: Optional[str]) -> List[str]:
    """What `thread/list {useStateDbOnly: true}` lists: rows alone (path exists, preview set,
    the row's provider and source, the row's cwd); line 1 is not read."""
    out: List[str] = []
    for r in inputs.rows:  # sorted by id (AuditInputs)
        if r.archived or r.model_provider != provider or r.source_kind not in INTERACTIVE_SOURCES:
            continue
        if cwd is not None and r.cwd != cwd:
            continue
        if r.preview is not None and not r.preview.strip():
            continue
        if inputs.path_exists(r.rollout_path):
            out.append(r.id)
    return out


def _sample(items: List[str], n: int) -> List[str]:
    return [safe_str(i) for i in items[:n]]


def surface_report(surface: Surface, judged: List[Judged], provider: str, cwd: Optional[str],
                   max_samples: int, folders: _Folders) -> Dict[str, Any]:
    listed_for = provider if surface.current_provider_only else None
    reasons = TUI_REASONS if surface.reads == "rows" else HIDE_REASONS
    visible, hidden = view(judged, listed_for, cwd, folders, reasons)
    return {  # compact: an agent reads this through a tool output of a few KB
        "provider": listed_for,
        "cwd": cwd,
        "visible": len(visible),
        "hidden": {k: len(v) for k, v in hidden.items() if v},
        "hidden_sample": {k: _sample(v, max_samples) for k, v in hidden.items() if v},
        "hidden_total": sum(len(v) for v in hidden.values()),
    }


def surface_views(inputs: AuditInputs, provider: str, tui_cwd: Optional[str], max_samples: int,
                  judged: Optional[List[Judged]] = None) -> Dict[str, Any]:
    """Per surface: what it lists and why the rest is missing there. `editors_cwd` and `tui` need a
    folder (`--cwd`, or the current folder when it holds sessions)."""
    judged = judge_all(inputs) if judged is None else judged
    rows = judge_rows(inputs)
    folders = _Folders()
    out: Dict[str, Any] = {}
    for s in SURFACES:
        seen = rows if s.reads == "rows" else judged
        if s.cwd_filter:
            out[s.name] = surface_report(s, seen, provider, tui_cwd, max_samples, folders) \
                if tui_cwd is not None else None
        else:
            out[s.name] = surface_report(s, seen, provider, None, max_samples, folders)
            if s.name == "editors" and tui_cwd is not None:
                out["editors_cwd"] = surface_report(s, seen, provider, tui_cwd, max_samples, folders)
    out["measured_on"] = {s.name: ", ".join(s.measured_on) for s in SURFACES}
    return out


def tui_default_cwd(inputs: AuditInputs, explicit: Optional[str], here: Optional[str],
                    moved: Optional[Dict[str, Any]] = None) -> Tuple[Optional[str], Optional[str]]:
    """(folder, why): `--cwd`, else the current folder when sessions were recorded there, or under
    its old name before the home moved (the TUI then shows none there: the story to tell)."""
    if explicit is not None:
        return explicit, "--cwd"
    if not here:
        return None, None
    cwds = {r.cwd for r in inputs.rows}
    cwds.update(m.cwd for m in inputs.metas.values() if m.cwd)
    if here in cwds:
        return here, "the current folder"
    if moved and moved.get("old_user_prefix"):
        old = replace_prefix(here, moved["new_user_prefix"], moved["old_user_prefix"])
        if old is not None and old in cwds:
            return here, "the current folder (its sessions are recorded under its old path)"
    return None, None


# --- the moved user folder ------------------------------------------------------------------------

def _parts(path: str) -> List[str]:
    return [p for p in normalize_for_match(path).split("/")]


def user_prefixes(old_home: str, new_home: str) -> Tuple[str, str]:
    """Strip the trailing folders both homes share (`.codex`, the user folder's inner path): what is
    left is the moved part, e.g. /home/old/.codex -> /home/new/.codex gives (/home/old, /home/new).
    At least one folder is kept on each side: never `/`."""
    a, b = _parts(old_home), _parts(new_home)
    keep = 0
    while keep < min(len(a), len(b)) - 2 and a[len(a) - 1 - keep] == b[len(b) - 1 - keep]:
        keep += 1
    if keep == 0:
        return old_home, new_home
    strip_a = old_home.replace("\\", "/").rstrip("/").rsplit("/", keep)[0]
    strip_b = new_home.replace("\\", "/").rstrip("/").rsplit("/", keep)[0]
    return strip_a or old_home, strip_b or new_home


def remappable(old: str, new: str) -> bool:
    """`--remap-prefix OLD=NEW` from an old home the rows name is one the scripts accept as given:
    no `=` in OLD (it splits the argument), absolute, normal (no `//`, `/./`), not `/`. An odd old
    home is never turned into a remap: its rows are counted as outside the home, as they are."""
    from sessionkit import UserError
    from sessionkit.codexfiles.rollout_edit import parse_remaps
    if "=" in old:
        return False
    try:
        parse_remaps([f"{old}={new}"])
    except UserError:
        return False
    return True


def moved_home(inputs: AuditInputs, judged: List[Judged], max_samples: int) -> Optional[Dict[str, Any]]:
    """The old home named from the rows' rollout_path, widened to the old user folder when the
    sessions' cwd lies under it too; the one `--remap-prefix OLD=NEW` that fixes both."""
    root = str(inputs.home.root)
    outside = [r.rollout_path for r in inputs.outside_home]
    prefixes = home_prefix_counts(outside, root)
    usable = [(p, k) for p, k in prefixes.most_common() if remappable(p, root)]
    if not usable:  # only odd old homes (`=`, control characters, relative, `/`): never a remap
        return None
    old, n = usable[0]
    old_user, new_user = user_prefixes(old, root)
    if not remappable(old_user, new_user):
        old_user, new_user = old, root
    cwds = Counter(j.cwd for j in judged if j.cwd)
    roots: Counter = Counter()
    for rf in inputs.index.files:
        for r in inputs.head_for(rf).roots or ():
            roots[r] += 1
    under = {c: k for c, k in cwds.items() if has_prefix(c, old_user)} if old_user != old else {}
    fixed = sum(k for c, k in under.items() if os.path.isdir(replace_prefix(c, old_user, new_user) or ""))
    use_user = bool(under)
    src, dst = (old_user, new_user) if use_user else (old, root)
    return {
        "old_prefix": safe_str(old), "new_prefix": safe_str(root), "rows": n,
        "remap_arg": f"--remap-prefix {safe_str(src)}={safe_str(dst)}",
        "old_user_prefix": safe_str(old_user) if use_user else None,
        "new_user_prefix": safe_str(new_user) if use_user else None,
        "cwd_rows": sum(under.values()),
        "cwd_rows_found_at_new_prefix": fixed,
        "cwd_folders_under_old_prefix": _sample(sorted(under), max_samples),
        "runtime_workspace_roots_rows": sum(k for r, k in roots.items() if has_prefix(r, src)),
    }


def cwd_folders(judged: List[Judged], max_samples: int) -> Dict[str, Any]:
    """Sessions whose recorded folder no longer exists: the TUI picker never shows them in a folder."""
    cwds = Counter(j.cwd for j in judged if j.base is None and j.cwd)
    folders = _Folders()
    gone = sorted(c for c in cwds if folders.gone(c))
    return {"folders": len(cwds), "missing_folders": len(gone), "missing_folder_threads": sum(cwds[c] for c in gone),
            "missing_folders_sample": _sample(gone, max_samples)}


def daemon_package(inputs: AuditInputs, moved: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """`packages/app-server-daemon/current` (absolute symlink): the 0.171 TUI does not start while it
    points at a folder that is gone; after a move it points into the old home."""
    link = inputs.home.root / str(DAEMON_PACKAGE_LINK.value)
    if not link.is_symlink():
        return None
    try:
        target = os.readlink(str(link))
    except OSError as exc:
        return {"path": safe_str(link), "target": None, "problem": f"cannot read the link: {exc.strerror}"}
    full = target if os.path.isabs(target) else os.path.join(str(link.parent), target)
    exists = os.path.isdir(full)
    inside = is_inside(os.path.normpath(full), inputs.home.root)
    problem = None
    fix = None
    if not inside or not exists:
        problem = ("points outside this Codex home" if not inside else "points at a folder that does not exist") + \
            ("" if exists else f": Codex {DAEMON_PACKAGE_LINK.measured_on[-1]}'s TUI (`codex`, `codex resume`) "
                                "stops with 'daemon executable not found' until it is re-pointed (meanwhile "
                                "`--no-daemon` works)")
        if moved is not None:
            for old, new in ((moved.get("old_user_prefix"), moved.get("new_user_prefix")),
                             (moved["old_prefix"], moved["new_prefix"])):
                cand = replace_prefix(target, old, new) if old and new else None
                if cand and os.path.isdir(cand):
                    fix = cand
                    break
        if fix is None:
            releases = link.parent / "releases"
            names = sorted(os.listdir(str(releases))) if releases.is_dir() else []
            if len(names) == 1:
                fix = str(releases / names[0])
    return {"path": safe_str(link), "target": safe_str(target), "target_exists": exists,
            "inside_home": inside, "problem": problem, "repoint_to": safe_str(fix) if fix else None}


def line1_fields(inputs: AuditInputs) -> Dict[str, Any]:
    """The 0.171 session_meta fields: how many carry them, and whether they hide anything (measured: no)."""
    scoped = roots = 0
    for h in inputs.heads.values():
        scoped += h.account_scoped
        roots += h.roots is not None
    return {"account_scoped_true": scoped, "with_runtime_workspace_roots": roots,
            "hide_sessions": ACCOUNT_FIELDS_HIDE.value, "measured_on": ", ".join(ACCOUNT_FIELDS_HIDE.measured_on)}
