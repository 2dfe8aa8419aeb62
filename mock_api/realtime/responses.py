"""Responses and the fake model: what a response says, what it costs, and how it ends.

Rules:

- One response at a time in the default conversation (``conversation_already_has_active_response``);
  out-of-band responses (``conversation: "none"``) run beside it and never become items.
- The fake model (:meth:`ResponsesPart._choose_reply`) decides everything at ``response.created``,
  in this order: an out-of-band request whose instructions ask to transcribe echoes the last user
  item; instructions that quote what to ``say`` say it; no user turn yet gets the greeting; a
  partial utterance gets the partial reply; after a tool output, the turn's ``after_tool``; a turn
  with tool calls (for tools the session has, ``tool_choice`` not ``none``) calls them once;
  otherwise the turn's ``says`` (and ``audio`` file, loaded by the injected ``audio_loader``) or
  the default reply. Synthesized reply audio speaks in the voice current at ``response.created``.
- Tokens are estimated at ``response.created`` (whole context plus planned output) and reserved
  against the tokens-per-minute budget; over budget, the response fails at once (``response.done``
  with ``status: failed`` and the 429 body), uses up no scripted turn, and a :class:`LimitHit`
  goes to the journal. ``response.done`` settles the reservation with what was really spent.
- ``response_failed`` (failure mode 25): the session's ``nth`` response and the ``count`` - 1 after it
  (every response that got as far as ``response.created`` counts, the greeting and out-of-band ones
  too) fail at once: ``response.done`` with ``status: failed`` and the ``service_unavailable_error``
  below, its input tokens counted and no output. Like a refusal over budget it uses up no scripted turn,
  so a retry of the same turn gets the answer the failed one would have given.
- A response ends once: ``completed`` after its last output, ``cancelled`` (client or barge-in),
  or ``incomplete`` at ``max_output_tokens``. Ending early closes its open outputs with what was
  emitted so far; later timers of an ended response do nothing.
"""

from __future__ import annotations

import json
import re
from functools import partial
from typing import Any

from .. import audio, ids, models
from ..faults import find
from ..limits import Hit, Reservation
from . import events as ev
from . import usage as u
from .outputs import LimitHit, Output, public_item
from .script import ToolCall
from .session_config import audio_format
from .session_state import PlannedOutput, ResponseState, SessionState
from .voice import reply_ms, speech_like, voice_name, voice_pitch

UNAVAILABLE_ERROR = {  # status_details.error of a response the service could not run (failure mode 25)
    "type": "service_unavailable_error",
    "code": "inference_service_unavailable_error",
    "message": "The server is overloaded or not ready yet. Please try again later.",
}


class ResponsesPart(SessionState):
    def _on_response_create(self, msg: dict[str, Any], now: float, event_id: str | None) -> list[Output]:
        return self._create_response(msg.get("response") or {}, now, event_id)

    def _create_response(self, params: dict[str, Any], now: float, event_id: str | None) -> list[Output]:
        in_conv = params.get("conversation", "auto") != "none"
        if in_conv and self.active_response_id is not None:
            return [ev.error("conversation_already_has_active_response",
                             f"Conversation already has an active response in progress: {self.active_response_id}. "
                             "Wait until the response is finished before creating a new one.", event_id=event_id)]
        context: list[dict[str, Any]]
        if "input" in params and params["input"] is not None:
            context = []
            for i, entry in enumerate(params["input"]):
                if entry.get("type") == "item_reference":
                    ref = self._item(entry.get("id"))
                    if ref is None:
                        return [ev.error("invalid_value", f"Item with id '{entry.get('id')}' not found.",
                                         param=f"response.input[{i}].id", event_id=event_id)]
                    context.append(ref)
                else:
                    context.append(entry)
        else:
            context = list(self.items)
        out_audio = params.get("audio", {}).get("output", {}) if isinstance(params.get("audio"), dict) else {}
        session_out = ((self.config.get("audio") or {}).get("output") or {})
        out_fmt = audio_format(((out_audio.get("format") or {}).get("type")) or self._output_format())
        instructions = params.get("instructions", self.config.get("instructions")) or ""
        tools = params.get("tools", self.config.get("tools")) or []
        text_tok = u.text_tokens(instructions) + u.text_tokens(json.dumps(tools)) if tools else u.text_tokens(
            instructions)
        audio_tok = 0
        for it in context:
            text_tok += u.MESSAGE_OVERHEAD
            for part in it.get("content") or []:
                text_tok += u.text_tokens(part.get("text") or (part.get("transcript")
                                                                if part.get("type") == "output_audio" else None))
            if it.get("type") in ("function_call", "function_call_output"):
                text_tok += u.text_tokens(it.get("arguments") or it.get("output"))
            if it.get("id") in self.item_audio:
                pcm, rate = self.item_audio[it["id"]]
                ms = audio.duration_ms(pcm, rate)
                audio_tok += u.user_audio_tokens(ms) if it.get("role") == "user" else u.assistant_audio_tokens(ms)
        modalities = list(params.get("output_modalities") or self.config.get("output_modalities") or ["audio"])
        resp = ResponseState(
            id=ids.server_id("resp"), in_conversation=in_conv, modalities=modalities,
            voice=out_audio.get("voice", session_out.get("voice", "alloy")), out_format=out_fmt,
            metadata=params.get("metadata"), max_output_tokens=params.get(
                "max_output_tokens", self.config.get("max_output_tokens", "inf")),
            context_text_tokens=text_tok, context_audio_tokens=audio_tok,
        )
        self._responses[resp.id] = resp
        tools_called = set(self._tools_called)
        self._plan(resp, params, context, instructions, tools)
        held = self.tokens.reserve(self._estimate(resp), now)
        if isinstance(held, Hit):
            self._tools_called = tools_called  # the refused response used up no scripted turn
            return self._refuse_over_budget(resp, held, now)
        resp.held = held
        if self._unavailable():
            self._tools_called = tools_called  # the failed response used up no scripted turn
            return self._fail_unavailable(resp, now)
        if in_conv:
            self.active_response_id = resp.id
        self._idle_since = None
        self._schedule_output(resp, now)
        return [ev.event("response.created", response=self._response_obj(resp))]

    @staticmethod
    def _estimate(resp: ResponseState) -> int:
        """Tokens a response will cost: its whole input plus the output it is about to generate."""
        out = sum(u.text_tokens(o.text) + u.assistant_audio_tokens(audio.duration_ms(o.pcm, o.rate) if o.pcm else 0)
                  for o in resp.outputs)
        return resp.context_text_tokens + resp.context_audio_tokens + out

    def _refuse_over_budget(self, resp: ResponseState, hit: Hit, now: float) -> list[Output]:
        """Tokens per minute spent: the response fails at once, as ``response.done`` with ``status: failed``.

        ``status_details.error`` carries the real 429 body's ``type``/``code``/message (SDK
        ``RealtimeResponseStatus.Error``); no output, zero usage; then ``rate_limits.updated``
        with the budget as it stands, so a client can wait ``reset_seconds``.
        """
        created = ev.event("response.created", response=self._response_obj(resp))
        resp.outputs = []
        resp.status = "failed"
        model = str(self.config.get("model") or models.DEFAULT_REALTIME)
        details = {"type": "failed", "reason": None,
                   "error": {"type": hit.error_type, "code": "rate_limit_exceeded", "message": hit.message(model)}}
        use = u.response_usage(in_text=0, in_audio=0, cached_prefix=0, out_text=0, out_audio=0)
        done = ev.event("response.done", response=self._response_obj(resp, final=True, usage=use, details=details))
        if self.active_response_id is None:
            self._idle_since = now
        return [created, done, LimitHit(hit, resp.id),
                ev.event("rate_limits.updated", rate_limits=[self.tokens.rate_limit(now)])]

    def _unavailable(self) -> bool:
        """Whether the response just created is one the ``response_failed`` fault fails."""
        fault = find(self.faults, "response_failed")
        if fault is None:
            return False
        first = int(fault.param("nth"))
        return first <= len(self._responses) < first + int(fault.param("count"))

    def _fail_unavailable(self, resp: ResponseState, now: float) -> list[Output]:
        """The service could not run the response: created, then done ``failed``; the input was read, nothing said."""
        created = ev.event("response.created", response=self._response_obj(resp))
        resp.outputs = []
        resp.status = "failed"
        use = u.response_usage(in_text=resp.context_text_tokens, in_audio=resp.context_audio_tokens,
                               cached_prefix=self._last_input_tokens, out_text=0, out_audio=0)
        self._last_input_tokens = use["input_tokens"]
        details = {"type": "failed", "reason": None, "error": dict(UNAVAILABLE_ERROR)}
        done = ev.event("response.done", response=self._response_obj(resp, final=True, usage=use, details=details))
        if self.active_response_id is None:
            self._idle_since = now
        return [created, done, self._rate_limits(resp, use["total_tokens"], now)]

    def _response_obj(self, resp: ResponseState, final: bool = False, usage: Any = None,
                      details: Any = None) -> dict[str, Any]:
        return {
            "object": "realtime.response", "id": resp.id, "status": resp.status, "status_details": details,
            "output": [public_item(o.item) for o in resp.outputs if o.open or o.item.get("status") != "in_progress"]
            if final else [],
            "conversation_id": self.conversation_id if resp.in_conversation else None,
            "output_modalities": resp.modalities, "max_output_tokens": resp.max_output_tokens,
            "audio": {"output": {"format": resp.out_format, "voice": voice_name(resp.voice)}},  # a custom voice: its id
            "usage": usage, "metadata": resp.metadata,
        }

    # ---- the fake model ----------------------------------------------------------------------

    def _plan(self, resp: ResponseState, params: dict[str, Any], context: list[dict[str, Any]],
              instructions: str, tools: list[Any]) -> None:
        """Decide what this response says, from the script and the context."""
        text, audio_file, calls = self._choose_reply(resp, params, context, instructions, tools)
        if text is not None:
            item_id = ids.server_id("item")
            kind = "output_audio" if "audio" in resp.modalities else "output_text"
            item = {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}
            out = PlannedOutput(item=item, text=text)
            if kind == "output_audio":
                rate = 24000 if resp.out_format["type"] == "audio/pcm" else 8000
                if audio_file:
                    out.pcm = self.audio_loader(audio_file, rate)
                else:
                    out.pcm = speech_like(reply_ms(text, self.script.ms_per_char), rate,
                                          pitch_hz=voice_pitch(resp.voice))
                out.rate = rate
            resp.outputs.append(out)
        for call in calls:
            item = {"id": ids.server_id("item"), "type": "function_call", "status": "in_progress",
                    "name": call.name, "call_id": call.call_id or ids.function_call_id(), "arguments": ""}
            resp.outputs.append(PlannedOutput(item=item, text=call.arguments_json()))

    def _choose_reply(self, resp: ResponseState, params: dict[str, Any], context: list[dict[str, Any]],
                      instructions: str, tools: list[Any]) -> tuple[str | None, str | None, list[ToolCall]]:
        last_user = next((it for it in reversed(context) if it.get("role") == "user"), None)
        if not resp.in_conversation and "transcri" in instructions.lower() and last_user is not None:
            return self._user_text(last_user), None, []  # out-of-band transcription (cookbook)
        quoted = re.search(r"\bsay\b[^'\"]*['\"]([^'\"]+)['\"]", instructions or "", re.IGNORECASE)
        if "instructions" in params and quoted:
            return quoted.group(1), None, []
        if last_user is None:
            return self.script.greeting or self.script.default_reply, None, []
        item_id = last_user.get("id")
        # an out-of-band response's inline input item has no id and is not in the conversation: heard as its text
        chosen = (self._assignment(item_id) if isinstance(item_id, str)
                  else self._turn_plan.assign(text=self._user_text(last_user)))
        if chosen.partial:
            return self.script.partial_reply, None, []
        turn_no, turn = chosen.index, self._turn_plan.turn(chosen)
        after_tool = context and context[-1].get("type") == "function_call_output"
        if after_tool:
            return turn.after_tool or turn.says or self.script.default_reply, None, []
        tool_choice = params.get("tool_choice", self.config.get("tool_choice", "auto"))
        names = {t.get("name") for t in tools if isinstance(t, dict)}
        calls = [c for c in turn.tool_calls if c.name in names]
        if calls and tool_choice != "none" and turn_no >= 0 and turn_no not in self._tools_called:
            self._tools_called.add(turn_no)
            return None, None, calls
        return turn.says or self.script.default_reply, turn.audio, []

    # ---- the end of a response -----------------------------------------------------------------

    def _finish(self, resp: ResponseState, status: str, reason: str | None, now: float) -> list[Output]:
        if resp.status != "in_progress":  # already ended (cancelled): a scheduled end does nothing
            return []
        evs: list[Output] = []
        if status != "completed":
            resp.status = status
            for idx, out in enumerate(resp.outputs):
                evs.extend(self._close_output(resp, out, idx, now))
        else:
            resp.status = "completed"
        out_text = sum(u.text_tokens(o.emitted_text if status != "completed" else o.text) for o in resp.outputs)
        out_audio = sum(u.assistant_audio_tokens(o.emitted_ms) for o in resp.outputs)
        if reason == "max_output_tokens" and isinstance(resp.max_output_tokens, int):
            out_audio = min(out_audio, resp.max_output_tokens)  # generation stopped at the limit
            out_text = min(out_text, resp.max_output_tokens - out_audio)
        use = u.response_usage(in_text=resp.context_text_tokens, in_audio=resp.context_audio_tokens,
                               cached_prefix=self._last_input_tokens, out_text=out_text, out_audio=out_audio)
        self._last_input_tokens = use["input_tokens"]
        details = None if status == "completed" else {"type": status, "reason": reason}
        evs.append(ev.event("response.done", response=self._response_obj(resp, final=True, usage=use,
                                                                          details=details)))
        if self.active_response_id == resp.id:
            self.active_response_id = None
        evs.append(self._rate_limits(resp, use["total_tokens"], now))
        if self.transport == "sip" and resp.started_audio and resp.id in self._playback:
            self._at(self._playback[resp.id], partial(self._playback_done, resp))
        self._idle_since = max(now, self._playback.get(resp.id, now))
        return evs

    def _rate_limits(self, resp: ResponseState, spent: int, now: float) -> dict[str, Any]:
        """Settle the response's reservation and report the budget left (2026 traffic: tokens only)."""
        self.tokens.settle(resp.held or Reservation(self.tokens.bucket, 0), spent, now)
        resp.held = None
        return ev.event("rate_limits.updated", rate_limits=[self.tokens.rate_limit(now)])

    def _on_response_cancel(self, msg: dict[str, Any], now: float, event_id: str | None) -> list[Output]:
        rid = msg.get("response_id") or self.active_response_id
        resp = self._responses.get(rid) if rid else None
        if resp is None and not msg.get("response_id"):
            resp = next((r for r in self._responses.values() if r.status == "in_progress"), None)
        if resp is None or resp.status != "in_progress":
            return [ev.error("response_cancel_not_active", "Cancellation failed: no active response found",
                             event_id=event_id)]
        return self._finish(resp, "cancelled", "client_cancelled", now)
