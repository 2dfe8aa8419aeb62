"""Self-check of the fidelity promise: every server event the mock sends parses with the SDK.

Off by default (it costs a pydantic validation per event). With ``RTSIP_EVENT_AUDIT`` set
to a file path, every WebSocket event is validated against the SDK's ``RealtimeServerEvent``
before it is sent, and each mismatch is appended to that file as a JSON line. The test
suite turns it on for every test, mock processes included, and fails a test whose run
wrote anything there.
"""

from __future__ import annotations

import json
import os
from functools import cache
from typing import Any

from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter, ValidationError

AUDIT_ENV = "RTSIP_EVENT_AUDIT"
audit_path: str | None = os.environ.get(AUDIT_ENV) or None
"""Where mismatches go; read once, since a per-event environment lookup showed up in load profiles.
Child processes read it from the environment; in-process tests set this directly."""
checked = 0


@cache
def _adapter() -> TypeAdapter[Any]:
    return TypeAdapter(RealtimeServerEvent)


def problem(event: dict[str, Any]) -> str | None:
    """Why the SDK would not parse ``event`` as the model its ``type`` names, or None."""
    return parse_problem(_adapter(), event)


def parse_problem(union: TypeAdapter[Any], event: dict[str, Any]) -> str | None:
    """Why ``union`` (one of the SDK's server-event unions) would not parse ``event`` as the member its ``type``
    names, or None: the Realtime audit's check, and the GPT-Live one's."""
    try:
        parsed = union.validate_python(event)
    except ValidationError as exc:
        return str(exc).splitlines()[0] + ": " + "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
    if getattr(parsed, "type", None) != event.get("type"):
        return f"{event.get('type')!r} parsed as {type(parsed).__name__}"
    return None


def audit(event: dict[str, Any]) -> None:
    """Validate and record a mismatch when auditing is on; a no-op otherwise."""
    global checked
    path = audit_path
    if not path:
        return
    checked += 1
    why = problem(event)
    if why is not None:
        with open(path, "a") as f:
            f.write(json.dumps({"type": event.get("type"), "problem": why, "event": event}) + "\n")
