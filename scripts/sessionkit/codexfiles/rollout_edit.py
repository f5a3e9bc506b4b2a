"""The one rollout editor: which fields of a rollout may change (the folder records Codex reads
back, line 1's payload fields, a fork's history_base), the one field finder, the one remap, the
span math of in-place and beside-and-rename writes, and how byte offsets into the file move.
Every change to a rollout (migration, repair, import, rollback) plans its bytes here; the journal
operations in ops.py (Line1Rewrite, RolloutRewrite) write them. Conversation content (message
text, tool calls, tool output) is never edited: only the records listed in FOLDER_RECORDS."""
from __future__ import annotations

import json
import os
from sessionkit.codexfiles.record import Record
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterator, List, Optional, Sequence, Tuple

from sessionkit import UserError
from sessionkit.codexfiles.paths import has_prefix, is_windows_absolute, replace_prefix, safe_str
from sessionkit.codexfiles.rollout_index import not_unicode

Remap = Tuple[str, str]
Span = Tuple[int, bytes, bytes]  # (offset, old bytes, new bytes) in old-file (or old-line) coordinates
Shift = List[int]  # [old-file offset of the line after a grown line, its growth]
CHUNK = 1024 * 1024

# The folder records real Codex 0.171 writes and reads back (resume, listing, the next turn's
# context), as (line type, event type or None, path to the object holding the field, field names).
# "*" walks every key of an object (world_state keeps one cwd per environment). Measured on a
# rollout of real 0.171 (tests/test_rollout_edit.py::test_real_codex_rollout_folder_records).
FOLDER_RECORDS: Tuple[Tuple[str, Optional[str], Tuple[str, ...], Tuple[str, ...]], ...] = (
    ("session_meta", None, ("payload",), ("cwd", "runtime_workspace_roots")),
    ("turn_context", None, ("payload",), ("cwd", "runtime_workspace_roots")),
    ("event_msg", "thread_settings_applied", ("payload", "thread_settings"), ("cwd", "runtime_workspace_roots")),
    ("world_state", None, ("payload",), ("cwd",)),
    ("world_state", None, ("payload", "state", "environments", "environments", "*"), ("cwd",)),
)
KIND_MARKS = (b'"turn_context"', b'"thread_settings_applied"', b'"world_state"', b'"session_meta"')


def field_token(key: str, value: Any) -> bytes:
    """`"key":value` as Codex writes it (compact JSON, UTF-8 unescaped; a lone surrogate passes
    through as the bytes a file would hold). Scalars are cached: a home has few distinct values."""
    if isinstance(value, (list, dict)):
        return _encode_token(key, json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    return _scalar_token(key, value)


@lru_cache(maxsize=1024)
def _scalar_token(key: str, value: Any) -> bytes:
    return _encode_token(key, json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def _encode_token(key: str, value_json: str) -> bytes:
    return (json.dumps(key) + ":" + value_json).encode("utf-8", "surrogatepass")


# --- the remap ------------------------------------------------------------------------------

def parse_remaps(values: Sequence[str], flag: str = "--remap-prefix") -> List[Remap]:
    """OLD=NEW pairs, both sides absolute paths (a relative NEW would be written into rows and
    rollouts as is); a bad one is a UserError (one line, exit 2)."""
    out = []
    for v in values:
        if "=" not in v:
            raise UserError(f"{flag} wants OLD=NEW, got {safe_str(v)!r}")
        old, new = v.split("=", 1)
        if not old or not new:
            raise UserError(f"{flag} wants OLD=NEW with both sides set, got {safe_str(v)!r}")
        for side in (old, new):
            problem = remap_side_problem(side)
            bare = side.replace("\\", "/").strip("/")
            if problem is None and (bare == "" or (len(bare) == 2 and bare[1] == ":" and bare[0].isalpha())):
                problem = "is the root folder: every path would be rewritten (name the old home's folder)"
            if problem is None and any(part in (".", "..") or (part == "" and 0 < n < len(parts) - 1)
                                       for parts in [side[side.startswith("\\\\") * 2:].replace("\\", "/").split("/")]
                                       for n, part in enumerate(parts)):
                problem = "is not a normal path (//, /./ or /../ in it): write it as the folder's plain path"
            if problem:
                raise UserError(f"{flag} {safe_str(v)!r}: {safe_str(side)!r} {problem}")
        out.append((old, new))
    return out


def remap_side_problem(side: str) -> Optional[str]:
    if any(ord(c) < 32 for c in side):
        return "holds a control character (NUL, newline, ...)"
    if not_unicode(side):
        return "is not valid UTF-8"
    if side.startswith("~"):
        return "starts with ~, which is not expanded here: write the absolute path"
    if not (side.startswith("/") or is_windows_absolute(side)):
        return "is not an absolute path"
    return None


def remap(value: str, remaps: Sequence[Remap]) -> str:
    """`value` with the first matching OLD prefix (on a path boundary) replaced by its NEW."""
    for old, new in remaps:
        if has_prefix(value, old):
            return replace_prefix(value, old, new) or value
    return value


def needles(remaps: Sequence[Remap]) -> List[bytes]:
    """Each OLD prefix as it appears inside a JSON string: a line without any is left undecoded."""
    return [json.dumps(old, ensure_ascii=False)[1:-1].encode("utf-8", "surrogatepass") for old, _ in remaps]


# --- the folder records of one decoded line -------------------------------------------------

def _walk(obj: Any, path: Tuple[str, ...]) -> List[Dict[str, Any]]:
    found = [obj]
    for step in path:
        nxt: List[Dict[str, Any]] = []
        for o in found:
            if not isinstance(o, dict):
                continue
            if step == "*":
                nxt.extend(v for v in o.values() if isinstance(v, dict))
            elif isinstance(o.get(step), dict):
                nxt.append(o[step])
        found = nxt
    return found


def folder_slots(obj: Any) -> List[Tuple[Dict[str, Any], str]]:
    """(object, field) of every folder record in one decoded rollout line: a string or a list of
    strings Codex reads back as a folder. Nothing else of the line is ever a slot."""
    if not isinstance(obj, dict) or not isinstance(obj.get("payload"), dict):
        return []
    kind, event = obj.get("type"), obj["payload"].get("type")
    out = []
    for k, ev, path, keys in FOLDER_RECORDS:
        if k != kind or (ev is not None and ev != event):
            continue
        for holder in _walk(obj, path):
            for key in keys:
                v = holder.get(key)
                if isinstance(v, str) or (isinstance(v, list) and v and all(isinstance(x, str) for x in v)):
                    out.append((holder, key))
    return out


def folder_changes(obj: Any, remaps: Sequence[Remap]) -> List[Tuple[Dict[str, Any], str, Any, Any]]:
    """(object, field, old, new) for every folder record of a decoded line that the remap changes."""
    out = []
    for holder, key in folder_slots(obj) if remaps else []:
        old = holder[key]
        new = remap(old, remaps) if isinstance(old, str) else [remap(x, remaps) for x in old]
        if new != old:
            out.append((holder, key, old, new))
    return out


def folder_values(line: bytes) -> List[str]:
    """Every folder a line records (for checks and tests); [] for a line that is not JSON."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return []
    out: List[str] = []
    for holder, key in folder_slots(obj):
        v = holder[key]
        out.extend([v] if isinstance(v, str) else v)
    return out


def without_folders(obj: Any) -> Any:
    """The decoded line with its folder records (and a fork's history_base) blanked: two copies of a
    thread imported with different remaps compare equal."""
    for holder, key in folder_slots(obj):
        holder[key] = None
    if isinstance(obj, dict) and obj.get("type") == "session_meta" and isinstance(obj.get("payload"), dict):
        obj["payload"].pop("history_base", None)
    return obj


# --- the field finder and one line's spans --------------------------------------------------

class LineEdit(Record):
    """One line's planned change: spans in line coordinates, or why the line cannot be changed."""
    __slots__ = ("spans", "problem", "old_values", "cut")

    def __init__(self, spans: Optional[List[Span]] = None, problem: Optional[str] = None,
                 old_values: Optional[Dict[str, Any]] = None, cut: Optional[Tuple[int, int]] = None) -> None:
        self.spans = [] if spans is None else spans
        self.problem = problem
        self.old_values = {} if old_values is None else old_values  # line 1's `set` fields as they were
        self.cut = cut  # line 1's long text (long_text), when the plan left it out

    @property
    def growth(self) -> int:
        return sum(len(n) - len(o) for _, o, n in self.spans)


def find_tokens(line: bytes, token: bytes, count: int) -> Optional[List[Tuple[int, int]]]:
    """(start, end) of each occurrence of `token` plus the JSON padding after it, when it occurs
    exactly `count` times; None otherwise (the line is not written the way Codex writes it)."""
    if line.count(token) != count:
        return None
    out, pos = [], 0
    for _ in range(count):
        start = line.find(token, pos)
        end = start + len(token)
        while end < len(line) and line[end] in b" \t":
            end += 1
        out.append((start, end))
        pos = end
    return out


def plan_fields(line: bytes, changes: Dict[str, Tuple[Any, Any]]) -> LineEdit:
    """A plan's quick view of line 1 fields {key: (old, new)}: the same spans plan_line makes, found
    without decoding the ~20 KB line (the write decodes and checks it under the writer lock)."""
    edit = LineEdit()
    for key, (old, new) in changes.items():
        found = find_tokens(line, field_token(key, old), 1)
        if found is None:
            edit.problem = f"line 1 layout not recognised (no single {key} field)"
            return edit
        (start, end), = found
        put = field_token(key, new)
        edit.spans.append((start, line[start:end], put + b" " * max(0, (end - start) - len(put))))
        edit.old_values[key] = old
    edit.spans.sort()
    return edit


LONG_TEXT = b'"base_instructions":{"text":"'  # line 1's ~20 KB string, written after the fields we set
LONG_ENOUGH = 4096


def long_text(line: bytes) -> Optional[Tuple[int, int]]:
    """(start, end) of the content of line 1's base_instructions text (between its quotes), when the
    line holds that key once and the content is long: its end is the first quote after it that no
    odd run of backslashes escapes. Five unescaped quotes cannot lie inside a JSON string, so in a
    line that decodes this is the content of a string."""
    at = line.find(LONG_TEXT)
    if at < 0 or line.find(LONG_TEXT, at + 1) >= 0:
        return None
    start = pos = at + len(LONG_TEXT)
    while True:
        q = line.find(b'"', pos)
        if q < 0:
            return None
        k = q
        while k > start and line[k - 1] == 0x5C:
            k -= 1
        if (q - k) % 2 == 0:
            return (start, q) if q - start >= LONG_ENOUGH else None
        pos = q + 1


def _plan_first_short(line: bytes, set_: Dict[str, Any]) -> Optional[LineEdit]:
    """Line 1's payload fields planned and checked on the line with its long text cut out (two
    decodes of ~1 KB instead of ~20 KB): the cut bytes are the same before and after, so the check
    is the same check. None (the whole line is planned then) when there is no long text, a span
    would lie past it, or anything is not as Codex writes it (the whole line's plan says why)."""
    cut = long_text(line) if "base_instructions" not in set_ else None
    if cut is None:
        return None
    edit = plan_line(line[:cut[0]] + line[cut[1]:], (), set_, first=True)
    if edit.problem is not None or any(off + len(old) > cut[0] for off, old, _new in edit.spans):
        return None
    if any(line.count(field_token(k, v)) != 1 for k, v in edit.old_values.items()):
        return None
    edit.cut = cut
    return edit


def plan_line(line: bytes, remaps: Sequence[Remap] = (), set_: Optional[Dict[str, Any]] = None,
              first: bool = False, marks: Optional[Sequence[bytes]] = None) -> LineEdit:
    """The spans that set line 1's payload fields `set_` and remap every folder record of the line,
    each value padded to its old length when it is not longer; checked by decoding the result
    (it must equal the line with exactly those fields changed). `marks`: the remap's needles (a
    line holding none of them is not decoded). Line 1's fields alone: checked on the line without
    its long base_instructions text (_plan_first_short)."""
    if first and set_ and not remaps:
        short = _plan_first_short(line, set_)
        if short is not None:
            return short
    edit = LineEdit()
    if not set_ and (not remaps or (marks is not None and not any(m in line for m in marks))):
        return edit
    if not first and not any(k in line for k in KIND_MARKS):
        return edit
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        if first and set_:
            edit.problem = "line 1 is not a session_meta JSON object"
        return edit  # not JSON: Codex skips such a line too; nothing of ours in it
    if remaps or not isinstance(obj, dict):
        want = json.loads(line)  # the remap may change records at any depth: a copy of every level
    else:  # line 1's payload fields only: a copy of the two levels they are set at, not a second decode
        want = dict(obj)
        if isinstance(obj.get("payload"), dict):
            want["payload"] = dict(obj["payload"])
    pairs = list(zip(folder_slots(obj), folder_slots(want))) if remaps else []
    changes: List[Tuple[str, Any, Any]] = []
    if first and set_:
        payload = obj.get("payload") if isinstance(obj, dict) and obj.get("type", "session_meta") == "session_meta" \
            else None
        if not isinstance(payload, dict):
            edit.problem = "line 1 is not a session_meta JSON object"
            return edit
        for key, value in set_.items():
            if key not in payload:
                edit.problem = f"line 1 has no payload.{key}"
                return edit
            if payload[key] != value:
                changes.append((key, payload[key], value))
                edit.old_values[key] = payload[key]
                want["payload"][key] = value
    mirror = {id(h): w for (h, _k), (w, _k2) in pairs}
    for holder, key, old, new in folder_changes(obj, remaps):
        if first and set_ and holder is obj.get("payload") and key in set_:
            continue
        changes.append((key, old, new))
        mirror[id(holder)][key] = new
    if not changes:
        return edit
    by_token: Dict[bytes, List[bytes]] = {}
    for key, old, new in changes:
        by_token.setdefault(field_token(key, old), []).append(field_token(key, new))
    spans = []
    for token, puts in by_token.items():
        found = find_tokens(line, token, len(puts))
        if found is None:
            edit.problem = f"a {token.split(b':', 1)[0].decode('utf-8', 'replace')} field is not written " \
                           "the way Codex writes it"
            return edit
        for (start, end), put in zip(found, puts):
            spans.append((start, line[start:end], put + b" " * max(0, (end - start) - len(put))))
    spans.sort()
    if any(a[0] + len(a[1]) > b[0] for a, b in zip(spans, spans[1:])):
        edit.problem = "fields overlap"
        return edit
    try:
        same = json.loads(apply_spans(line, spans, True)) == want
    except ValueError:
        same = False
    if not same:
        edit.problem = "the rewrite would change more than the named fields"
        return edit
    edit.spans = spans
    return edit


# --- span math of the writes ------------------------------------------------------------------

def apply_spans(data: bytes, spans: Sequence[Span], forward: bool) -> bytes:
    """Put new (forward) or old bytes at each span; spans are in old coordinates."""
    out, pos, delta = [], 0, 0
    for off, old, new in spans:
        start = off if forward else off + delta
        take, put = (old, new) if forward else (new, old)
        out.append(data[pos:start])
        out.append(put)
        pos = start + len(take)
        delta += len(new) - len(old)
    out.append(data[pos:])
    return b"".join(out)


def ranges(path: str, spans: Sequence[Span], forward: bool) -> list:
    """Parts for a beside-and-rename write: the file with each span's old (forward) or new bytes
    swapped for the other; span offsets are old-file offsets, mapped to the current file when undoing."""
    parts: list = []
    pos, moved = 0, 0
    for off, old, new in spans:
        take, put = (old, new) if forward else (new, old)
        at = off if forward else off + moved
        if at > pos:
            parts.append((path, pos, at - pos))
        parts.append(put)
        pos = at + len(take)
        moved += len(new) - len(old)
    parts.append((path, pos))
    return parts


def digest_range(path: str, length: int, patches: Sequence[Tuple[int, bytes]] = ()) -> Optional[str]:
    """sha256 of the file's first `length` bytes with `patches` (offset, bytes; sorted, in range)
    put over them, streamed; None when the file is shorter or unreadable."""
    import hashlib  # only where a digest is made: a dry-run of an import loads none
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            pos = 0
            for off, data in list(patches) + [(length, b"")]:
                left = off - pos
                while left > 0:
                    chunk = fh.read(min(CHUNK, left))
                    if not chunk:
                        return None
                    h.update(chunk)
                    left -= len(chunk)
                if data:
                    h.update(data)
                    fh.seek(len(data), os.SEEK_CUR)
                pos = off + len(data)
    except OSError:
        return None
    return h.hexdigest()


# --- byte offsets that point into the file ----------------------------------------------------

def shift(value: int, shifts: Sequence[Shift]) -> int:
    """An old-file offset in the rewritten file: moved by every delta whose boundary it is at or past."""
    if value < 0:
        return value
    return value + sum(d for b, d in shifts if value >= b)


def unshift(value: int, shifts: Sequence[Shift]) -> int:
    """The inverse, for offsets in the rewritten file (turns appended since included)."""
    if value < 0:
        return value
    moved, back = 0, 0
    for b, d in shifts:
        moved += d
        if value >= b + moved:
            back = moved
    return value - back


def line1_shifts(old_len: int, growth: int) -> List[Shift]:
    """A line-1-only rewrite: everything from line 2 on moves by the growth."""
    return [[old_len + 1, growth]] if growth else []


# --- whole files ------------------------------------------------------------------------------

def iter_lines(fh: BinaryIO) -> Iterator[Tuple[int, bytes, bytes]]:
    """(offset, line without its newline, the newline or b'') for every line, streamed."""
    offset = 0
    for raw in fh:
        body = raw[:-1] if raw.endswith(b"\n") else raw
        yield offset, body, raw[len(body):]
        offset += len(raw)


class FilePlan(Record):
    """A whole rollout's planned change: spans (old-file offsets), the shifts its grown lines make,
    and the digests that tell old, new and torn apart (prefix: through the last changed line)."""
    __slots__ = ("spans", "shifts", "prefix_len", "old_sha", "new_sha", "folder_lines", "size", "old_file_sha",
                 "new_file_sha", "old_values", "problem")

    def __init__(self, spans: Optional[List[Span]] = None, shifts: Optional[List[Shift]] = None, prefix_len: int = 0,
                 old_sha: str = "", new_sha: str = "", folder_lines: int = 0, size: int = 0, old_file_sha: str = "",
                 new_file_sha: str = "", old_values: Optional[Dict[str, Any]] = None,
                 problem: Optional[str] = None) -> None:
        self.spans = [] if spans is None else spans
        self.shifts = [] if shifts is None else shifts
        self.prefix_len = prefix_len
        self.old_sha = old_sha
        self.new_sha = new_sha
        self.folder_lines = folder_lines  # lines past line 1 whose folders change
        self.size = size
        self.old_file_sha = old_file_sha
        self.new_file_sha = new_file_sha
        self.old_values = {} if old_values is None else old_values
        self.problem = problem

    @property
    def growth(self) -> int:
        return sum(len(n) - len(o) for _, o, n in self.spans)


def _open_rollout(path: str) -> Any:
    """A rollout's bytes: a compressed one (`X.jsonl.zst`, or `X.jsonl` that lies compressed) read
    decompressed, as Codex reads it; the run that writes it decompresses it first (decompress.py)."""
    from sessionkit.codexfiles.zstd import ZST, open_zst
    if path.endswith(ZST):
        return open_zst(path)
    if not os.path.lexists(path) and os.path.isfile(path + ZST):
        return open_zst(path + ZST)
    return open(path, "rb")


def plan_file(path: str, remaps: Sequence[Remap], set_: Optional[Dict[str, Any]] = None,
              digests: bool = True) -> FilePlan:
    """Read the rollout once and plan every line's change (line 1's `set_` and every folder record).
    `digests=False`: a planner's look (what changes, how it grows), none of the digests the write
    makes when it plans the file again under its lock."""
    plan = FilePlan()
    if digests:
        import hashlib
        old_h, new_h = hashlib.sha256(), hashlib.sha256()
    else:
        old_h = new_h = _NO_DIGEST
    marks = needles(remaps)
    try:
        with _open_rollout(path) as fh:
            for offset, line, tail in iter_lines(fh):
                total = offset + len(line) + len(tail)
                edit = plan_line(line, remaps, set_ if offset == 0 else None, first=offset == 0, marks=marks)
                if edit.problem:
                    plan.problem = edit.problem if offset == 0 else f"the line at byte {offset}: {edit.problem}"
                    return plan
                old_h.update(line + tail)
                plan.size = total
                if not edit.spans:
                    new_h.update(line + tail)
                    continue
                if offset == 0:
                    plan.old_values = edit.old_values
                else:
                    plan.folder_lines += 1
                new_h.update(apply_spans(line, edit.spans, True) + tail)
                plan.spans += [(offset + o, a, b) for o, a, b in edit.spans]
                if edit.growth:
                    plan.shifts.append([total, edit.growth])
                plan.prefix_len = total
                plan.old_sha, plan.new_sha = old_h.copy().hexdigest(), new_h.copy().hexdigest()
    except OSError as exc:
        plan.problem = f"{safe_str(path)}: {exc.strerror}"
        return plan
    if digests:
        plan.old_file_sha, plan.new_file_sha = old_h.hexdigest(), new_h.hexdigest()
    return plan


class _NoDigest:
    """A digest that is not made (plan_file's `digests=False`)."""

    def update(self, data: bytes) -> None:
        pass

    def copy(self) -> "_NoDigest":
        return self

    def hexdigest(self) -> str:
        return ""


_NO_DIGEST = _NoDigest()


class EditedCopy:
    """A rollout's bytes as another home gets them (the import): line 1's `set_` and every folder
    record remapped, line by line, with the shifts of the lines that changed length (so offsets
    into the copy, history rows and forks' history_base, move with them)."""

    def __init__(self, remaps: Sequence[Remap]) -> None:
        self.remaps = list(remaps)
        self.marks = needles(self.remaps)

    def stream(self, path: Path, line1_set: Optional[Dict[str, Any]] = None,
               line1_len: Optional[int] = None, shifts: Optional[List[Shift]] = None) -> Iterator[bytes]:
        """The edited bytes; `shifts` (when given) is filled with [boundary, growth] as it goes. A
        line 1 that is not `line1_len` bytes long, or a change that cannot be made, is a UserError."""
        with open(path, "rb") as fh:
            for offset, line, tail in iter_lines(fh):
                first = offset == 0
                if first and line1_len is not None and len(line) != line1_len:
                    raise UserError(f"{path} changed since the plan was made (line 1 differs)")
                edit = plan_line(line, self.remaps, line1_set if first else None, first=first, marks=self.marks)
                if edit.problem and first and line1_set:
                    raise UserError(f"{path}: line 1: {edit.problem}")
                out = apply_spans(line, edit.spans, True) if edit.spans and not edit.problem else line
                if shifts is not None and len(out) != len(line):
                    shifts.append([offset + len(line) + len(tail), len(out) - len(line)])
                yield out + tail

