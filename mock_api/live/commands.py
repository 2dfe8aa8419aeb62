"""Client commands of a started Live session (``session.start`` included), one handler each.

Rules (each refusal is an ``error`` to the sender only, and changes nothing):

- ``session.start``: once, on the primary; answered by ``session.started`` with the resolved resource. On a
  fork the start's ``ForkSessionConfig`` is laid over the stored session's (:mod:`.forks`).
- ``session.update``: only ``delegation`` and ``triggers`` (:mod:`.resource`) → ``session.updated``.
- ``session.input_audio.append`` (primary): base64 in the startup format; reflected to sidebands, and
  handed to the adapter's hearing unless the model input is muted or a fixture plays. No ack.
- ``session.input_audio.mute`` / ``unmute`` → ``muted`` / ``unmuted``: the model hears silence
  meanwhile (caller speech is dropped); reflection goes on. Independent of a fixture's muting.
- ``session.output_audio.fixture.play``: checked whole (:func:`~.validation.fixture_pcm`), one at a
  time → ``fixture.playing``, later ``fixture.played`` (:mod:`.playback`).
- ``session.instructions|thinking|commentary.append`` → ``*.appended`` at the current timeline ms;
  refused while a fixture plays, over 500 tokens, or naming a delegation that does not exist (any
  non-null id under Responses delegation). An accepted thinking or commentary append cancels pending
  acknowledgements; a commentary naming a client delegation is said by the model (:mod:`.delegation`).
- ``transport.dtmf.send`` (sideband, SIP sessions): one key of ``0-9 A-D * #`` → the media path
  sends it and the sidebands get ``transport.dtmf.sent``.
- ``decision.create``: its ``event_id`` once per session, Decisions delegation required →
  ``decision.event`` to the sender (:mod:`.decisions`). ``decision.item.create|delete`` keep the
  extra Decision inputs → ``decision.item.created|deleted``.
- ``response.create`` / ``response.item.create`` need Responses delegation. An item is kept, with no
  ack; ``response.create`` starts the next nested response (:mod:`.delegation`). One continuing a
  delegation one of whose function calls has no kept ``function_call_output`` is refused
  (``tool_output_missing``, setting ``require_tool_outputs``).
- ``session.close`` → ``session.closed`` (``close_requested``), then every connection closes.

Acks (``client_event_id`` set when the command had an ``event_id``) go to every connection, since
they report the session's state; ``transport.dtmf.sent`` goes to the sidebands only.
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from typing import Any

from .. import audio, ids
from ..realtime import usage
from . import decisions, forks, resource
from . import events as ev
from .connections import Connection
from .delegation import Delegating
from .outputs import Audience, InputAudio, Output, SendDtmf
from .refusals import Refusal
from .state import CloseReason
from .validation import DTMF_KEYS, fixture_pcm

APPEND_MAX_TOKENS = 500


class Commands(Delegating):
    @abstractmethod
    def _start(self, config: dict[str, Any], now: float, client_event_id: str | None) -> list[Output]: ...

    @abstractmethod
    def _close(self, reason: CloseReason, now: float, client_event_id: str | None) -> list[Output]: ...

    def _on_session_start(self, conn: Connection, msg: dict[str, Any], now: float,
                          cid: str | None) -> list[Output]:
        if self.resource is not None:
            return self._refuse(conn.id, Refusal.ALREADY_STARTED, "The session has already started; "
                                "session.start is sent once.", "type", cid)
        if self.fork_of is not None:
            config = forks.config_for(self.fork_of, msg["session"], self.settings)
            if isinstance(config, forks.Refused):
                return self._refuse(conn.id, config.refusal, config.message, config.param, cid)
            return self._start(config, now, cid)
        return self._start(msg["session"], now, cid)

    def _on_session_update(self, conn: Connection, msg: dict[str, Any], now: float,
                           cid: str | None) -> list[Output]:
        assert self.resource is not None
        new = resource.updated(self.resource, msg["session"])
        if isinstance(new, resource.Refused):
            return self._refuse(conn.id, new.refusal, new.message, new.param, cid)
        self.resource = new
        return [self._send(ev.session_event("session.updated", new, cid), Audience.ALL)]

    def _on_session_input_audio_append(self, conn: Connection, msg: dict[str, Any], now: float,
                                       cid: str | None) -> list[Output]:
        fmt = resource.output_format(self.resource or {})
        try:
            data = audio.b64decode(msg["audio"])
        except ValueError:  # binascii.Error is a ValueError
            return self._refuse(conn.id, Refusal.BAD_AUDIO, "Invalid 'audio': expected base64-encoded audio.",
                                "audio", cid)
        if fmt["type"] == "audio/pcm":
            pcm, rate = data[: len(data) - len(data) % 2], int(fmt.get("rate") or 24000)
        else:
            pcm, rate = audio.decode_wire(data, fmt["type"])
        out = self._reflect_input(pcm, rate)
        if not self.muted and self._fixture is None and pcm:
            out.append(InputAudio(pcm, rate))
        return out

    def _on_session_input_audio_mute(self, conn: Connection, msg: dict[str, Any], now: float,
                                     cid: str | None) -> list[Output]:
        self.muted = True
        return [self._send(ev.event("session.input_audio.muted", cid), Audience.ALL)]

    def _on_session_input_audio_unmute(self, conn: Connection, msg: dict[str, Any], now: float,
                                       cid: str | None) -> list[Output]:
        self.muted = False
        return [self._send(ev.event("session.input_audio.unmuted", cid), Audience.ALL)]

    def _on_session_output_audio_fixture_play(self, conn: Connection, msg: dict[str, Any], now: float,
                                              cid: str | None) -> list[Output]:
        pcm = fixture_pcm(msg["audio"])
        if isinstance(pcm, tuple):
            return self._refuse(conn.id, pcm[0], pcm[1], "audio", cid)
        if self._fixture is not None:
            return self._refuse(conn.id, Refusal.FIXTURE_ACTIVE, "Another audio fixture is still playing; wait "
                                "for session.output_audio.fixture.played.", None, cid)
        return self._play_fixture(pcm, cid, now)

    def _on_append(self, conn: Connection, msg: dict[str, Any], now: float, cid: str | None) -> list[Output]:
        kind = msg["type"].split(".")[1]  # instructions, thinking, commentary
        if self._fixture is not None:
            return self._refuse(conn.id, Refusal.APPEND_DURING_FIXTURE, f"session.{kind}.append is not accepted "
                                "while an audio fixture is playing.", None, cid)
        delegation_id = msg.get("delegation_id")
        if delegation_id is not None:
            if resource.delegation_type(self.resource or {}) == "responses":
                return self._refuse(conn.id, Refusal.DELEGATION_ID_WITH_RESPONSES, "Invalid 'delegation_id': "
                                    "only null is accepted with Responses delegation.", "delegation_id", cid)
            if delegation_id not in self._delegations:
                return self._refuse(conn.id, Refusal.DELEGATION_NOT_FOUND, f"Invalid 'delegation_id': no "
                                    f"delegation '{delegation_id}' exists in this session.", "delegation_id", cid)
        if usage.text_tokens(msg["content"]) > APPEND_MAX_TOKENS:
            return self._refuse(conn.id, Refusal.CONTENT_TOO_LONG, f"Invalid 'content': at most "
                                f"{APPEND_MAX_TOKENS} tokens can be appended at once.", "content", cid)
        out = [self._send(ev.appended(kind, self._ms(now), cid), Audience.ALL)]
        if kind != "instructions":
            self._cancel_acknowledgements(delegation_id)
        if kind == "commentary":
            out.extend(self._commentary_answers(delegation_id, msg["content"], now))
        return out

    _on_session_instructions_append = _on_append
    _on_session_thinking_append = _on_append
    _on_session_commentary_append = _on_append

    def _on_transport_dtmf_send(self, conn: Connection, msg: dict[str, Any], now: float,
                                cid: str | None) -> list[Output]:
        if self.transport != "sip":
            return self._refuse(conn.id, Refusal.DTMF_NOT_SIP, "transport.dtmf.send is supported only for SIP "
                                "calls.", "type", cid)
        digit = msg["event"]
        if digit not in DTMF_KEYS:
            return self._refuse(conn.id, Refusal.BAD_DTMF, f"Invalid 'event': '{digit}'. Send one DTMF key: "
                                "0-9, A-D, * or #.", "event", cid)
        return [SendDtmf(digit), self._send(ev.event("transport.dtmf.sent", cid, event=digit), Audience.SIDEBANDS)]

    def _on_decision_create(self, conn: Connection, msg: dict[str, Any], now: float,
                            cid: str | None) -> list[Output]:
        event_id = msg["event_id"]
        if event_id in self._decision_ids:
            return self._refuse(conn.id, Refusal.DECISION_ID_REUSED, f"Invalid 'event_id': '{event_id}' was "
                                "already used by a decision.create in this session.", "event_id", cid)
        delegation = (self.resource or {}).get("delegation") or {}
        if delegation.get("type") != "decisions":
            return self._refuse(conn.id, Refusal.NO_DECISIONS, "decision.create needs Decisions delegation "
                                "(delegation.type 'decisions') with questions.", None, cid)
        self._decision_ids.add(event_id)
        config = delegation["decisions"]
        decision = decisions.decide(list(config.get("questions") or []), str(config.get("model") or ""))
        return [self._send(ev.decision_event(decision), Audience.SENDER, conn.id)]

    def _on_decision_item_create(self, conn: Connection, msg: dict[str, Any], now: float,
                                 cid: str | None) -> list[Output]:
        item = copy.deepcopy(msg["item"])
        if not item.get("id"):
            item["id"] = ids.server_id("item")
        self._decision_items[item["id"]] = item
        return [self._send(ev.event("decision.item.created", cid, item=item), Audience.ALL)]

    def _on_decision_item_delete(self, conn: Connection, msg: dict[str, Any], now: float,
                                 cid: str | None) -> list[Output]:
        item_id = msg["item_id"]
        if self._decision_items.pop(item_id, None) is None:
            return self._refuse(conn.id, Refusal.ITEM_NOT_FOUND, f"Invalid 'item_id': no Decision item "
                                f"'{item_id}' exists.", "item_id", cid)
        return [self._send(ev.event("decision.item.deleted", cid, item_id=item_id), Audience.ALL)]

    def _without_responses(self, conn: Connection, msg: dict[str, Any], cid: str | None) -> list[Output] | None:
        if resource.delegation_type(self.resource or {}) == "responses":
            return None
        return self._refuse(conn.id, Refusal.NO_RESPONSES_DELEGATION, f"{msg['type']} needs Responses "
                            "delegation (delegation.type 'responses').", "type", cid)

    def _on_response_item_create(self, conn: Connection, msg: dict[str, Any], now: float,
                                 cid: str | None) -> list[Output]:
        refused = self._without_responses(conn, msg, cid)
        if refused is not None:
            return refused
        self._keep_response_item(copy.deepcopy(msg["item"]))
        return []

    def _on_response_create(self, conn: Connection, msg: dict[str, Any], now: float,
                            cid: str | None) -> list[Output]:
        refused = self._without_responses(conn, msg, cid)
        if refused is not None:
            return refused
        missing = self._missing_tool_output() if self.settings.require_tool_outputs else None
        if missing is not None:  # the delegated response waits for tool results: nothing starts
            return self._refuse(conn.id, Refusal.TOOL_OUTPUT_MISSING, missing, None, cid)
        return self._next_response(now, cid)

    def _on_session_close(self, conn: Connection, msg: dict[str, Any], now: float, cid: str | None) -> list[Output]:
        return self._close("close_requested", now, cid)
