"""Read the few config.toml keys the scripts need; tomllib where present, a small reader on 3.9."""
from __future__ import annotations

import re
from typing import Any, Dict, List

try:  # Python 3.11+
    import tomllib as _tomllib  # type: ignore[import-not-found]  # novermin
except ImportError:  # pragma: no cover - exercised on Python 3.9/3.10
    _tomllib = None

_HEADER = re.compile(r"^\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_KEY = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_ASSIGN = re.compile(r"^(" + _KEY + r"(?:\s*\.\s*" + _KEY + r")*)\s*=\s*(.*)$")


class TomlError(ValueError):
    pass


def _split_key(text: str) -> List[str]:
    parts = re.findall(_KEY, text)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


def _value(raw: str, lineno: int) -> Any:
    raw = raw.strip()
    if raw.startswith('"""') or raw.startswith("'''"):
        raise TomlError(f"line {lineno}: multi-line strings are not supported by the fallback reader")
    if raw.startswith('"'):
        m = re.match(r'"((?:[^"\\]|\\.)*)"\s*(#.*)?$', raw)
        if not m:
            raise TomlError(f"line {lineno}: unterminated string")
        return bytes(m.group(1), "utf-8").decode("unicode_escape") if "\\" in m.group(1) else m.group(1)
    if raw.startswith("'"):
        m = re.match(r"'([^']*)'\s*(#.*)?$", raw)
        if not m:
            raise TomlError(f"line {lineno}: unterminated string")
        return m.group(1)
    value = raw.split("#", 1)[0].strip()
    if not value:
        raise TomlError(f"line {lineno}: missing value")
    if value in ("true", "false"):
        return value == "true"
    if re.fullmatch(r"[+-]?\d+", value):
        return int(value)
    return value  # arrays, inline tables, floats, dates: kept as text, never needed here


def parse_minimal(text: str) -> Dict[str, Any]:
    """Tables and key = value lines; enough for model_provider, profiles, providers, sqlite_home."""
    root: Dict[str, Any] = {}
    table = root
    depth = 0  # open brackets of a multi-line array or inline table being skipped
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if depth:
            depth += stripped.count("[") + stripped.count("{") - stripped.count("]") - stripped.count("}")
            continue
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("[["):
            table = {}  # arrays of tables hold nothing the scripts read
            continue
        header = _HEADER.match(stripped)
        if header:
            table = root
            for part in _split_key(header.group(1)):
                nxt = table.setdefault(part, {})
                if not isinstance(nxt, dict):
                    raise TomlError(f"line {lineno}: table [{header.group(1)}] redefines a key")
                table = nxt
            continue
        assign = _ASSIGN.match(stripped)
        if not assign:
            raise TomlError(f"line {lineno}: cannot parse {stripped[:60]!r}")
        keys = _split_key(assign.group(1))
        raw = assign.group(2)
        opened = raw.count("[") + raw.count("{") - raw.count("]") - raw.count("}")
        if raw.lstrip()[:1] in "[{" and opened > 0:
            depth = opened
            continue
        target = table
        for part in keys[:-1]:
            target = target.setdefault(part, {})
        target[keys[-1]] = _value(raw, lineno)
    return root


def loads(text: str) -> Dict[str, Any]:
    if _tomllib is not None:
        try:
            return _tomllib.loads(text)
        except _tomllib.TOMLDecodeError as exc:
            raise TomlError(str(exc)) from None
    return parse_minimal(text)
