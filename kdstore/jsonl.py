"""JSON Lines written by kd: one object a line, whatever a text holds; and the kinds of JSON value
kd checks in the files it reads back (a manifest, a model's configuration)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

# json.dumps(ensure_ascii=False) escapes the control characters but leaves these raw, and
# str.splitlines() (what many readers split JSON Lines with) ends a line at each of them
_LINE_ENDS = str.maketrans({c: f"\\u{ord(c):04x}" for c in "\x85\u2028\u2029"})


def dumps_line(obj: Any) -> str:
    """``obj`` as one line of JSON (no newline at the end), non-ASCII text kept readable."""
    return json.dumps(obj, ensure_ascii=False).translate(_LINE_ENDS)


def split_lines(text: str) -> list[str]:
    """The lines of a JSON Lines text: split at ``\\n`` only (a raw U+2028 inside a string, as
    other tools write it, is part of its line); a ``\\r`` before it is dropped."""
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def text_key(obj: dict, default: str) -> str:
    """The key of a JSON object most likely holding its text: ``text``, else that of its longest
    string value (``内容`` beside an ``id``), else ``default``: what kd's hints name for JSON lines."""
    texts = [k for k, v in obj.items() if isinstance(v, str)]
    return "text" if "text" in texts else max(texts, key=lambda k: len(obj[k]), default=default)


class RepeatedKey(ValueError):
    """A JSON object that names a key twice (``json.loads`` would keep the last value, silently)."""

    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


class _NotJson:
    """A number JSON has no room for (NaN, Infinity, 1e400), as the parser met it: refused by the object
    that holds it, naming its field, or after parsing (in an array, or alone)."""

    def __init__(self, message: str):
        self.message = message


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for ``json.loads``: the object, or ``RepeatedKey`` naming a key given twice
    (a ``ValueError`` naming the field of a number out of range)."""
    bad = next(((k, v) for k, v in pairs if isinstance(v, _NotJson)), None)
    if bad is not None:
        raise ValueError(f"field {bad[0]!r}: {bad[1].message}")
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        raise RepeatedKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return obj


MAX_DEPTH = 100  # arrays and objects nested in one another, at most, in a JSON line kd reads


def loads_strict(line: str) -> Any:
    """One JSON Lines value as kd reads input: a key named twice is a ``RepeatedKey`` (``json.loads``
    keeps the last), and NaN, Infinity or a number out of range a ``ValueError`` (they are no JSON, and
    written back they would make kd's own output none either); so is a value nested more than
    ``MAX_DEPTH`` deep (``[[[...]]]``: a RecursionError traceback from the parser, or from
    ``has_surrogate`` and the writers after it)."""
    try:
        value = json.loads(line, parse_float=_finite_number, parse_constant=_no_constant, object_pairs_hook=unique_keys)
    except RecursionError:
        value = None
    else:
        if _depth(value) <= MAX_DEPTH:
            return value
    raise ValueError(f"arrays or objects nested more than {MAX_DEPTH} deep")


def _depth(value: Any) -> int:
    """How deep arrays and objects nest in a parsed JSON value (0: a scalar), without recursion; a
    ``ValueError`` for a number out of range that no object's field held."""
    deepest, level = 0, [(value, 0)]
    while level:
        item, depth = level.pop()
        if isinstance(item, _NotJson):  # (in an array, or the line's whole value)
            raise ValueError(item.message)
        if isinstance(item, (dict, list)):
            depth += 1
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                break
            level.extend((v, depth) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _finite_number(text: str) -> float | _NotJson:
    value = float(text)
    return value if math.isfinite(value) else _NotJson(f"the number {text} is out of range")


def _no_constant(name: str) -> _NotJson:
    return _NotJson(f"{name} is not a JSON number")


_SURROGATE = re.compile("[\ud800-\udfff]")


def is_whole(value: Any) -> bool:
    """A JSON whole number (``true`` is no number, though Python's bool is an int)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A JSON number, whole or not (``true`` is none)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def has_surrogate(value: Any) -> bool:
    """Whether a JSON value (keys included) holds a lone surrogate: ``"\\ud83d"`` without its pair
    parses, but has no UTF-8 (a tokenizer, a database, a written line each fail on it)."""
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(has_surrogate(k) or has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_surrogate(v) for v in value)
    return False
