"""JSON as the real API speaks it: strict in, strict out.

Python's ``json`` accepts ``NaN``, ``Infinity`` and ``-Infinity`` and writes them back, but they
are not JSON: JavaScript's ``JSON.parse``, Go and serde reject them, so a mock that echoes
``"speed": NaN`` breaks every client that is not Python. Deep nesting is refused at the door
too: 500-999 levels parse in Python, then any recursive step (validation, a deep copy) raises,
and a request that the mock cannot handle must get a 400, not a crash.

The nesting limit is the one serde_json (the common strict parser) applies by default; the real
service's own limit is not documented.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 128


class WireJSONError(ValueError):
    """Not JSON the real API would take; the message says why, in one line."""


def _no_constants(name: str) -> Any:
    raise WireJSONError(f"{name} is not valid JSON")


def loads(text: str | bytes) -> Any:
    """Parse strictly: no NaN/Infinity, at most MAX_DEPTH levels of arrays and objects."""
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except WireJSONError:
        raise
    except RecursionError:
        raise WireJSONError(f"nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireJSONError(str(exc)) from None
    if _may_be_deep(text):
        _check_depth(value)
    return value


def _may_be_deep(text: str | bytes) -> bool:
    """Cheap upper bound: fewer brackets than the limit cannot nest past it (audio appends skip the walk)."""
    if isinstance(text, bytes):
        return text.count(b"[") + text.count(b"{") > MAX_DEPTH
    return text.count("[") + text.count("{") > MAX_DEPTH


def _check_depth(value: Any) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > MAX_DEPTH:
            raise WireJSONError(f"nested deeper than {MAX_DEPTH} levels")
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


def dumps(value: Any) -> str:
    """Serialize for the wire; a NaN or infinity here is a bug of the mock and raises ``ValueError``."""
    return json.dumps(value, allow_nan=False)
