"""Line 1's payload fields are planned and checked on the line without its long base_instructions
text: the same spans, old values and problems as the whole line's plan, with no decode of the
~20 KB line; anything not as Codex writes it goes to the whole line's plan."""
import json

import pytest

from sessionkit.codexfiles import rollout_edit as R

TEXT = ('You are Codex. Say "hi" and \\ then a path C:\\\\dir\\\\ and a quote \\" ' * 300) + "end\\"


def line1(payload_extra: str = "", text: str = TEXT, provider: str = "oldco") -> bytes:
    meta = {"timestamp": "2025-01-01T00:00:00.000Z", "type": "session_meta", "payload": {
        "id": "0190aaaa-0000-7000-8000-000000000001", "cwd": "/work/p", "model_provider": provider,
        "base_instructions": {"text": text}, "history_mode": "paginated"}}
    out = json.dumps(meta, ensure_ascii=False, separators=(",", ":"))
    if payload_extra:
        out = out[:-2] + payload_extra + "}}"
    return out.encode("utf-8")


def full(line: bytes, set_: dict) -> R.LineEdit:
    return R.plan_line(line, (), set_, first=True) if R.long_text(line) is None else \
        _without_short(line, set_)


def _without_short(line: bytes, set_: dict) -> R.LineEdit:
    saved = R._plan_first_short
    R._plan_first_short = lambda _l, _s: None
    try:
        return R.plan_line(line, (), set_, first=True)
    finally:
        R._plan_first_short = saved


def test_the_long_text_is_found_exactly_between_its_quotes():
    line = line1()
    start, end = R.long_text(line)
    assert json.loads(b'"' + line[start:end] + b'"') == TEXT


@pytest.mark.parametrize("set_", [{"model_provider": "newco"}, {"model_provider": "a-much-longer-provider-name"},
                                  {"model_provider": "oldco"}, {"cwd": "/w", "model_provider": "x"},
                                  {"no_such_field": "x"}])
def test_same_plan_as_the_whole_line_and_no_decode_of_it(monkeypatch, set_):
    line = line1()
    want = _without_short(line, set_)
    sizes = []
    real = json.loads
    monkeypatch.setattr(R.json, "loads", lambda s, *a, **k: (sizes.append(len(s)), real(s, *a, **k))[1])
    got = R.plan_line(line, (), set_, first=True)
    assert (got.spans, got.problem, got.old_values) == (want.spans, want.problem, want.old_values)
    if want.problem is None and want.spans:
        assert sizes and max(sizes) < 2000  # only the ~1 KB line without its text was decoded
        new = R.apply_spans(line, got.spans, True)
        assert json.loads(new)["payload"] == {**json.loads(line)["payload"], **set_}


@pytest.mark.parametrize("extra", [',"model_provider":"zzz"',  # a second key after the text: the last wins
                                   ',"x":{"model_provider":"oldco"}',  # the old token twice
                                   ',"base_instructions":{"text":"again"}'])
def test_a_line_not_as_codex_writes_it_gets_the_whole_lines_answer(extra):
    line = line1(extra)
    got = R.plan_line(line, (), {"model_provider": "newco"}, first=True)
    want = _without_short(line, {"model_provider": "newco"})
    assert (got.spans, got.problem, got.old_values) == (want.spans, want.problem, want.old_values)
    if got.problem is None:
        assert json.loads(R.apply_spans(line, got.spans, True))["payload"]["model_provider"] == "newco"


def test_a_short_text_or_none_is_planned_on_the_whole_line():
    for line in (line1(text="short"), line1().replace(b'"base_instructions"', b'"base_instruction_"')):
        assert R.long_text(line) is None
        got = R.plan_line(line, (), {"model_provider": "newco"}, first=True)
        assert got.problem is None and got.old_values == {"model_provider": "oldco"}
