"""Skip and leave reasons as named constants (sessionkit/codexfiles/reasons.py): each is used, and
no module of the fixes or the journal spells one out again as a literal (one wording to change)."""
import re
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))

from sessionkit.codexfiles import reasons  # noqa: E402


def _constants():
    return {k: v for k, v in vars(reasons).items() if k.isupper() and isinstance(v, str)}


def _sources():
    return {p: p.read_text(encoding="utf-8") for p in (SCRIPTS / "sessionkit").rglob("*.py")
            if p.name != "reasons.py"}


def test_every_reason_is_used_by_name():
    sources = "\n".join(_sources().values())
    unused = [k for k in _constants() if not re.search(r"\b" + k + r"\b", sources)]
    assert unused == []


def test_no_reason_is_spelled_out_again():
    copies = []
    for path, text in _sources().items():
        if "/fixes/" not in str(path) and "/runlog/" not in str(path):
            continue
        for name, value in _constants().items():
            head = value.split("{")[0].strip()
            if len(head) >= 20 and (f'"{head}' in text or f"'{head}" in text):
                copies.append((path.name, name))
    assert copies == []


def test_templates_fill_as_the_runs_print_them():
    assert reasons.LIVE_GROUP.format(other="T") == ("skipped with T: live thread (its writer lock is held); a thread "
                                                    "and its sub-agents change together")
    assert reasons.SKIPPED_WITH.format(other="T", why="x") == "skipped with T: x"
    assert reasons.AMBIGUOUS_FILES.format(n=2) == "ambiguous: 2 rollout files carry this thread id"
    assert "{links}" in reasons.HARD_LINKED
