"""Text from a home made safe for a terminal: control characters (an escape sequence in a title,
a newline in a folder name) shown as escapes, never sent to the terminal as they are."""
from __future__ import annotations

import re

from .paths import safe_str

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def shown(text: object) -> str:
    """`text` for one line of output: not UTF-8 bytes and control characters as backslash escapes."""
    return _CONTROL.sub(lambda m: "\\x%02x" % ord(m.group()), safe_str(text))
