"""The nested Responses streams a Live session's Responses delegation produces (``response.event``'s ``event``).

The fake has no Responses backend: a nested response is either the turn's scripted function calls or
one text message. Rules:

- Shapes are the SDK's Responses streaming events (``openai.types.responses.ResponseStreamEvent``),
  each with its ``sequence_number`` counted from 0 within its response.
- Lifecycle snapshots (``response.created`` / ``in_progress`` / ``completed``) follow the Live rule for
  nested responses: no ``input``, ``instructions`` cleared (null), ``tools`` and ``output`` empty; the
  content arrives in the granular events only.
- ``model``, ``tool_choice`` and ``parallel_tool_calls`` echo the session's ``delegation.responses``
  (``tool_choice`` ``auto`` and ``parallel_tool_calls`` true when not set). Usage counts the text and
  the arguments generated (about four characters a token), nothing for the input: the fake reads none.
- Ids come from the current id source (``resp_``, ``msg_``, ``fc_``; a function call without a
  scripted ``call_id`` gets ``call_`` + base62).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .. import ids
from ..realtime.script import ToolCall

__all__ = ["FunctionCall", "function_calls", "function_tool_names", "text_message"]


@dataclass(frozen=True)
class FunctionCall:
    """A function call a nested response made: what the app answers with a ``function_call_output``."""

    call_id: str
    name: str
    arguments: str


def _tokens(text: str) -> int:
    return (len(text) + 3) // 4


def _snapshot(config: dict[str, Any], resp_id: str, created_at: float, status: str,
              output_tokens: int | None) -> dict[str, Any]:
    tool_choice = config.get("tool_choice", "auto")
    out: dict[str, Any] = {
        "id": resp_id, "object": "response", "created_at": created_at, "status": status,
        "model": str(config.get("model") or ""), "instructions": None, "output": [], "tools": [],
        "tool_choice": tool_choice, "parallel_tool_calls": bool(config.get("parallel_tool_calls", True)),
        "error": None, "incomplete_details": None,
    }
    if output_tokens is not None:
        out["completed_at"] = created_at
        out["usage"] = {"input_tokens": 0, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                        "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                        "total_tokens": output_tokens}
    return out


def _numbered(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**e, "sequence_number": n} for n, e in enumerate(events)]


def _lifecycle(config: dict[str, Any], resp_id: str, created_at: float, body: list[dict[str, Any]],
               output_tokens: int) -> list[dict[str, Any]]:
    started = _snapshot(config, resp_id, created_at, "in_progress", None)
    done = _snapshot(config, resp_id, created_at, "completed", output_tokens)
    return _numbered([{"type": "response.created", "response": started},
                      {"type": "response.in_progress", "response": started},
                      *body,
                      {"type": "response.completed", "response": done}])


def text_message(config: dict[str, Any], text: str, created_at: float) -> tuple[str, list[dict[str, Any]]]:
    """One assistant message saying ``text``, in word-sized deltas: (the response id, its events)."""
    resp_id, item_id = ids.server_id("resp"), ids.server_id("msg")
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    at = {"item_id": item_id, "output_index": 0, "content_index": 0}

    def message(status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}

    body: list[dict[str, Any]] = [
        {"type": "response.output_item.added", "output_index": 0, "item": message("in_progress", [])},
        {"type": "response.content_part.added", **at, "part": part},
        *({"type": "response.output_text.delta", **at, "delta": piece, "logprobs": []}
          for piece in re.findall(r"\S+\s*|\s+", text) or [text]),
        {"type": "response.output_text.done", **at, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **at, "part": {**part, "text": text}},
        {"type": "response.output_item.done", "output_index": 0,
         "item": message("completed", [{**part, "text": text}])},
    ]
    return resp_id, _lifecycle(config, resp_id, created_at, body, _tokens(text))


def function_calls(config: dict[str, Any], calls: list[ToolCall], created_at: float
                   ) -> tuple[str, list[FunctionCall], list[dict[str, Any]]]:
    """The scripted calls, one output item each, arguments in one delta: (response id, the calls, events)."""
    resp_id = ids.server_id("resp")
    made: list[FunctionCall] = []
    body: list[dict[str, Any]] = []
    for index, call in enumerate(calls):
        fc = FunctionCall(call.call_id or ids.function_call_id(), call.name, call.arguments_json())
        made.append(fc)
        item_id = ids.server_id("fc")
        item = {"id": item_id, "type": "function_call", "call_id": fc.call_id, "name": fc.name}
        at = {"item_id": item_id, "output_index": index}
        body += [
            {"type": "response.output_item.added", "output_index": index,
             "item": {**item, "arguments": "", "status": "in_progress"}},
            {"type": "response.function_call_arguments.delta", **at, "delta": fc.arguments},
            {"type": "response.function_call_arguments.done", **at, "arguments": fc.arguments},
            {"type": "response.output_item.done", "output_index": index,
             "item": {**item, "arguments": fc.arguments, "status": "completed"}},
        ]
    tokens = sum(_tokens(fc.arguments) for fc in made)
    return resp_id, made, _lifecycle(config, resp_id, created_at, body, tokens)


def function_tool_names(config: dict[str, Any]) -> set[str]:
    """The names of the function tools the Responses delegation offers its model."""
    tools = config.get("tools") or []
    return {str(t.get("name")) for t in tools if isinstance(t, dict) and t.get("type") == "function"}
