"""Delegation: the work the fake Live model hands to the app (``client``), a Responses backend or Decisions.

GPT-Live owns the conversation; reasoning and tools are delegated. The fake delegates by script.

Rules:

- A caller utterance answered by a script turn with ``tool_calls`` is delegated (under ``client``,
  ``responses`` and ``decisions`` delegation); any other turn is answered by the model itself
  (:mod:`.behaviour`).
- Delegating sends ``session.delegation.created`` to every connection: ``delegation {id, target,
  type: "delegation"}`` (``response_id``: the first nested response's, Responses delegation only) and
  ``offset_ms``, the session timeline at that moment. The id stays valid for the rest of the session.
- ``acknowledgement_delay_ms`` (the session's delegation config when the delegation is made) later, the
  model says :attr:`~.settings.LiveSettings.acknowledgement`, unless a ``session.commentary.append`` or
  ``session.thinking.append`` was accepted before that (any such append cancels every pending
  acknowledgement, or only the named delegation's: ``acknowledgement_cancelled_by``), the delegation's
  result is already being said, or an audio fixture plays. The timer runs on the session clock.
- ``client``: the app answers with ``session.commentary.append {content, delegation_id}``, which the
  model says (output transcript and audio, after what it is saying); ``session.thinking.append`` is
  silent context. Appends naming an id no delegation has are refused (:mod:`.commands`).
- ``responses``: the delegation starts a nested response, sent as ``response.event`` with the
  delegation's id (:mod:`.responses`). It makes the turn's ``tool_calls`` that name a function tool of
  ``delegation.responses.tools`` (none when ``tool_choice`` is ``none``); with none to make, it answers
  in text at once. After function calls, the app's ``response.item.create`` items are kept and its
  ``response.create`` starts the next nested response, answered in text and carrying the command's
  ``event_id`` as ``client_event_id``. It continues the delegation whose call a kept
  ``function_call_output`` answers (by ``call_id``), else the newest one whose calls are unanswered;
  with none, it stands alone (no ``delegation_id``) and answers the script's ``default_reply``. It
  uses up the kept items (the newest ``RESPONSE_INPUTS_KEPT`` of them).
- Tool outputs: the delegation a ``response.create`` continues is "waiting for tool results" (the SDK's
  words); one of its function calls that no kept ``function_call_output`` answers is what the Responses
  API refuses as "No tool output found for function call …". :meth:`Delegating._missing_tool_output` says
  so, for the command handler to refuse the ``response.create`` with a Live ``error``.
- ``decisions``: the delegation is answered at once by ``decision.event`` (``decision.completed``, the
  delegation's id, a Decision answering the configured questions as ``decision.create`` does, to every
  connection), and the model says the result; the scripted tool calls are not made (a Decision has
  no tools).
- A text answer is the turn's ``after_tool``, else its ``says``, else the script's ``default_reply``; the
  model says it once the nested response completed.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from .. import ids
from ..realtime.script import Turn
from . import decisions, responses
from . import events as ev
from .outputs import Audience, Output
from .playback import Playback
from .state import Delegation

__all__ = ["Delegating", "Delegation"]

RESPONSE_INPUTS_KEPT = 256  # the newest response.item.create items kept for the next response.create


class Delegating(Playback):
    def _delegation_config(self) -> dict[str, Any]:
        return dict((self.resource or {}).get("delegation") or {"type": "client"})

    def _delegates(self, turn: Turn | None) -> bool:
        """Whether the model hands this turn off instead of answering it."""
        return turn is not None and bool(turn.tool_calls) and self._delegation_config()["type"] in (
            "client", "responses", "decisions")

    def _delegate(self, turn: Turn, now: float) -> list[Output]:
        config = self._delegation_config()
        d = Delegation(ids.server_id("del"), str(config["type"]), turn)
        self._delegations[d.id] = d
        self._timers.at(now + int(config.get("acknowledgement_delay_ms") or 0) / 1000.0,
                        partial(self._acknowledge, d))
        body: dict[str, Any] = {"id": d.id, "target": d.target, "type": "delegation"}
        created = ev.event("session.delegation.created", delegation=body, offset_ms=self._ms(now))
        if d.target == "decisions":
            backend = dict(config.get("decisions") or {})
            decision = decisions.decide(list(backend.get("questions") or []), str(backend.get("model") or ""))
            return [self._send(created, Audience.ALL),
                    self._send(ev.decision_event(decision, d.id), Audience.ALL),
                    *self._say_result(d, self._result_text(turn), now)]
        if d.target != "responses":
            return [self._send(created, Audience.ALL)]
        backend = dict(config.get("responses") or {})
        offered = responses.function_tool_names(backend) if backend.get("tool_choice") != "none" else set()
        calls = [c for c in turn.tool_calls if c.name in offered]
        created_at = int(self._wall(now))
        text: str | None = None
        if calls:
            resp_id, made, nested = responses.function_calls(backend, calls, created_at)
            d.calls = tuple(made)
        else:
            text = self._result_text(turn)
            resp_id, nested = responses.text_message(backend, text, created_at)
        body["response_id"] = resp_id
        out = [self._send(ev.event("session.delegation.created", delegation=body, offset_ms=self._ms(now)),
                          Audience.ALL)]
        out.extend(self._nested(nested, d.id, None))
        if text is not None:
            out.extend(self._say_result(d, text, now))
        return out

    def _acknowledge(self, d: Delegation, now: float) -> list[Output]:
        if not d.acknowledge or self.closed or self._fixture is not None:
            return []
        d.acknowledge = False
        assert self._behaviour is not None
        return self._speak(self._behaviour.say(self.settings.acknowledgement), now)

    def _cancel_acknowledgements(self, delegation_id: str | None) -> None:
        """A commentary or thinking append was accepted: the pending acknowledgements it cancels."""
        for d in self._delegations.values():
            if self.settings.acknowledgement_cancelled_by == "any_append" or d.id == delegation_id:
                d.acknowledge = False

    def _say_result(self, d: Delegation, text: str, now: float) -> list[Output]:
        d.acknowledge = False
        d.answered = True
        assert self._behaviour is not None
        return self._speak(self._behaviour.say(text), now)

    def _result_text(self, turn: Turn) -> str:
        return turn.after_tool or turn.says or self.script.default_reply

    def _nested(self, nested: list[dict[str, Any]], delegation_id: str | None,
                client_event_id: str | None) -> list[Output]:
        """Nested Responses events, each wrapped in a ``response.event`` for every connection."""
        extra: dict[str, Any] = {} if delegation_id is None else {"delegation_id": delegation_id}
        return [self._send(ev.event("response.event", client_event_id, event=body, **extra), Audience.ALL)
                for body in nested]

    def _commentary_answers(self, delegation_id: str | None, content: str, now: float) -> list[Output]:
        """A client delegation's answer: the model says the commentary that names it."""
        d = self._delegations.get(delegation_id or "")
        if d is None or d.target != "client":
            return []
        return self._say_result(d, content, now)

    def _keep_response_item(self, item: dict[str, Any]) -> None:
        self._response_inputs.append(item)
        del self._response_inputs[:-RESPONSE_INPUTS_KEPT]  # a client that never sends response.create

    def _answered_calls(self) -> set[str]:
        """The call ids the kept ``function_call_output`` items answer."""
        return {str(item.get("call_id")) for item in self._response_inputs
                if item.get("type") == "function_call_output"}

    def _continued(self) -> Delegation | None:
        """The delegation a ``response.create`` continues: the one a kept output answers, else the newest
        whose calls are unanswered; None: the response stands alone."""
        open_ = [d for d in self._delegations.values() if d.target == "responses" and d.calls and not d.answered]
        answered = self._answered_calls()
        named = [d for d in open_ if answered & {c.call_id for c in d.calls}]
        candidates = named or open_
        return candidates[-1] if candidates else None

    def _missing_tool_output(self) -> str | None:
        """Why a ``response.create`` now cannot continue its delegation (a function call of it has no kept
        ``function_call_output``), in the Responses API's words; None when nothing is missing."""
        d = self._continued()
        answered = self._answered_calls()
        missing = [c.call_id for c in d.calls if c.call_id not in answered] if d is not None else []
        return f"No tool output found for function call {missing[0]}." if missing else None

    def _next_response(self, now: float, client_event_id: str | None) -> list[Output]:
        """``response.create``: the next nested response, continuing the newest open delegation."""
        d = self._continued()
        self._response_inputs.clear()  # used up by this response
        backend = dict(self._delegation_config().get("responses") or {})
        text = self._result_text(d.turn) if d is not None else self.script.default_reply
        _, nested = responses.text_message(backend, text, int(self._wall(now)))
        out = self._nested(nested, d.id if d is not None else None, client_event_id)
        if d is not None:
            out.extend(self._say_result(d, text, now))
        else:
            assert self._behaviour is not None
            out.extend(self._speak(self._behaviour.say(text), now))
        return out
