"""JSON from untrusted text, with its nesting bounded before the parser recurses into it."""

from __future__ import annotations

import json
from typing import Any

# Deeper than anything this service reads or writes, far below the recursion limit.
MAX_DEPTH = 32


class TooDeep(ValueError):
    """The text nests arrays or objects deeper than allowed."""


def nesting_depth(text: str) -> int:
    """How deeply arrays and objects nest in `text`, brackets inside strings not counted."""
    if text.count("[") + text.count("{") <= 1:  # the usual flat body costs two scans in C
        return text.count("[") + text.count("{")
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def loads(text: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads`, but TooDeep past `max_depth` levels and ValueError for anything unreadable."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("not UTF-8") from None
    if nesting_depth(text) > max_depth:
        raise TooDeep(f"nested deeper than {max_depth} levels")
    return json.loads(text)
