"""JSON text, the one place: exact parsing, compact and canonical dumps, and the GLM-4 data style.

orjson parses and writes in Rust, but reads an integer beyond 64 bits as a float (losing digits)
and cannot write one; the standard library does both exactly. Every function here gives the exact
result and uses orjson where that is the same.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["JSONDecodeError", "canonical", "compact", "dumps", "loads", "may_hold_long_number"]

JSONDecodeError = json.JSONDecodeError

# 19 digits in a row may be an integer orjson cannot hold (beyond 64 bits). Mapping every byte to
# "0" (digit) or "x" and searching is ~15x faster than a regex like rb"\d{19}".
_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x78 for b in range(256))
_NINETEEN = b"0" * 19


def may_hold_long_number(data: bytes | str) -> bool:
    """Does JSON ``data`` hold 19 digits in a row? Then it may hold an integer beyond 64 bits,
    which orjson reads as a float, losing digits, and ``json.loads`` must parse it."""
    if isinstance(data, str):
        if len(data) < 19:
            return False
        data = data.encode("utf-8", "surrogatepass")
    return data.translate(_DIGITS).find(_NINETEEN) >= 0


def loads(text: str | bytes) -> Any:
    """``json.loads``, exactly: integers beyond 64 bits kept, ``NaN`` accepted as the standard
    library accepts it. Parsed by orjson when that gives the same value; raises
    ``json.JSONDecodeError`` (with the position) for text that is not JSON."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
    if may_hold_long_number(text):
        return json.loads(text)
    return value


def compact(value: Any) -> bytes:
    """Compact JSON as UTF-8 bytes, key order and non-ASCII text kept (what glmdata writes)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), check_circular=False).encode("utf-8")


def canonical(value: Any) -> bytes:
    """Compact JSON with sorted keys: equal values give equal bytes (a cache or merge key)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")


def dumps(value: Any) -> str:
    """JSON text as the GLM-4 data and tutorials write it: non-ASCII kept, ``", "`` and ``": "``
    (``json.dumps(value, ensure_ascii=False)``): a native call's arguments, a JSON-style call."""
    return _GLM_STYLE.encode(value)


# Built once: json.dumps with options builds an encoder per call, a third of the cost of a call's
# arguments. Parsed JSON holds no cycles; one built by hand is a RecursionError, which the
# converter reports.
_GLM_STYLE = json.JSONEncoder(ensure_ascii=False, check_circular=False)
