"""One Realtime session, sans-I/O: client events, audio and a clock in; server events and audio out.

The adapters (WebSocket, SIP ingress) own sockets, tasks and timers; this class owns the
protocol. Every entry point takes ``now`` (monotonic seconds) and returns a list of
outputs: server events as plain dicts (each parses as the SDK's ``RealtimeServerEvent``),
:class:`AudioOut` chunks for the media path of SIP sessions, :class:`ClearAudio` when a
barge-in must flush what is still playing, and :class:`Close` when the socket must end.
``next_deadline()`` tells the adapter when to call :meth:`advance` again.

Rules:

- Pure: time only from ``now`` arguments and ``wall`` (the wall time at construction, read from the
  system clock only when not given); ids and delta padding only from ``ids`` (an
  :class:`~mock_api.ids.IdSource`; seeded, it makes a whole session reproducible); reply audio
  files only through ``audio_loader``; what the caller said only from ``recogniser``. The same
  seed, clock, script and input give the same outputs, byte for byte.
- Every entry point makes the session's id source current while it runs, then runs the timers
  that came due by ``now``, in due order.
- Nothing a client sends may raise out of here: every entry point catches, answers the real
  ``server_error`` event and hands the adapter a :class:`MockBug` (journal ``mock.bug``), so a bug
  never wedges a call and is never mistaken for a scripted fault.
- A client event is checked whole before it is handled (a known ``type`` for this kind and
  transport, a string ``event_id``, the SDK's parameter types); a refused event changes nothing.

The session is assembled from parts, one module per reason to change, each stating its own rules:
:mod:`.session_config` (defaults, ``session.update``, voice and static faults),
:mod:`.input_buffer` (audio in, turn detection, commits, idle timeout), :mod:`.hearing` (what the
caller said, input transcription), :mod:`.conversation` (items), :mod:`.responses` (responses, the
fake model, token budget), :mod:`.generation` (paced output) and :mod:`.playback` (SIP playback,
barge-in). :mod:`.session_state` declares the fields they share and the calls between them.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from openai.types.realtime import (
    ConversationItemCreateEventParam,
    ConversationItemDeleteEventParam,
    ConversationItemRetrieveEventParam,
    ConversationItemTruncateEventParam,
    InputAudioBufferAppendEventParam,
    InputAudioBufferClearEventParam,
    InputAudioBufferCommitEventParam,
    OutputAudioBufferClearEventParam,
    RealtimeResponseCreateParamsWithReferencesParam,
    ResponseCancelEventParam,
    SessionUpdateEventParam,
)

from sipworker import turns

from .. import audio, wire_json
from .. import ids as idgen
from ..faults import Fault, find
from ..limits import Limiter, SessionTokens
from ..recognisers import Recogniser
from . import events as ev
from .conversation import ConversationPart
from .generation import GenerationPart
from .hearing import HearingPart
from .input_buffer import InputBufferPart
from .outputs import (
    SERVER_ERROR_MESSAGE,
    AudioOut,
    ClearAudio,
    Close,
    Heard,
    LimitHit,
    MockBug,
    Output,
    mock_bug,
)
from .playback import PlaybackPart
from .responses import ResponsesPart
from .script import Script
from .session_config import ConfigPart, default_session, or_default, sets_formats
from .session_config import merge_session as _merge_session
from .session_state import AudioLoader, Kind, SessionState, Transport
from .turn_plan import TurnPlan
from .validation import validate_payload

__all__ = [
    "SERVER_ERROR_MESSAGE",
    "AudioOut",
    "ClearAudio",
    "Close",
    "Heard",
    "Kind",
    "LimitHit",
    "MockBug",
    "Output",
    "RealtimeSession",
    "Transport",
    "_merge_session",
    "default_session",
]

TOKENS_LIMIT = 40000  # the reported (never enforced) budget when no tokens_per_minute limit is set

_EVENT_PARAMS: dict[str, Any] = {
    "session.update": SessionUpdateEventParam,
    "input_audio_buffer.append": InputAudioBufferAppendEventParam,
    "session.input_audio_buffer.append": InputAudioBufferAppendEventParam,
    "input_audio_buffer.commit": InputAudioBufferCommitEventParam,
    "input_audio_buffer.clear": InputAudioBufferClearEventParam,
    "output_audio_buffer.clear": OutputAudioBufferClearEventParam,
    "conversation.item.create": ConversationItemCreateEventParam,
    "conversation.item.retrieve": ConversationItemRetrieveEventParam,
    "conversation.item.delete": ConversationItemDeleteEventParam,
    "conversation.item.truncate": ConversationItemTruncateEventParam,
    "response.cancel": ResponseCancelEventParam,
}

_P = ParamSpec("_P")
_R = TypeVar("_R")
_S = TypeVar("_S", bound=SessionState)


def _entry(fn: Callable[Concatenate[_S, _P], _R]) -> Callable[Concatenate[_S, _P], _R]:
    """An entry point: every id drawn inside it (events.py's event ids too) comes from the session's source."""
    @functools.wraps(fn)
    def run(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with idgen.using(self.ids):
            return fn(self, *args, **kwargs)
    return run


class RealtimeSession(ConfigPart, InputBufferPart, HearingPart, ConversationPart, ResponsesPart, GenerationPart,
                      PlaybackPart):
    def __init__(
        self,
        *,
        kind: Kind = "realtime",
        transport: Transport = "websocket",
        model: str | None = None,
        config: dict[str, Any] | None = None,
        sip_format: str = "audio/pcmu",
        script: Script | dict[str, Any] | None = None,
        faults: list[Fault] | None = None,
        now: float = 0.0,
        wall: float | None = None,
        sip_audio_deltas: bool = False,
        limiter: Limiter | None = None,
        recogniser: Recogniser | None = None,
        ids: idgen.IdSource | None = None,
        audio_loader: AudioLoader = audio.load_audio,
    ) -> None:
        self.ids = ids or idgen.current()  # today: the OS; IdSource(seed) replays
        self.audio_loader = audio_loader  # reply audio files (Turn.audio) come only through here
        self.kind = kind
        self.recogniser = recogniser  # None: recognisers.default_recogniser() (audio_fixtures/), on first use
        self.transport = transport
        self.script = Script.load(script)
        self.faults = list(faults or []) + list(self.script.faults)
        self.sip_format = sip_format
        self.sip_audio_deltas = sip_audio_deltas
        self._mono0 = now
        self._wall0 = time.time() if wall is None else wall
        fmt = sip_format if transport == "sip" else "audio/pcm"
        with idgen.using(self.ids):
            self.config = default_session(kind, model, fmt, self._wall0)
            self.conversation_id = idgen.server_id("conv")
        self.media_corrupt = self._fault("static_audio")
        self._format_forced = False
        if config:
            self._check_forced_format(config, via="accept")
            patch = {k: v for k, v in config.items() if k != "type"}
            self.config = _merge_session(self.config, patch)
            if transport == "sip" and self._fault("static_after_update") and "tools" in config \
                    and not sets_formats(config):
                self._reset_formats_to_pcm()
        self.items = []
        self.item_audio = {}
        self._buffer = bytearray()
        self._buffer_start_ms = 0.0
        self._audio_ms = 0.0
        self._pending_item_id = None
        self._speech_start_ms = None
        self._detector = None
        self._rebuild_detector()
        self._timers = []
        self._seq = itertools.count()
        self._responses = {}
        self.active_response_id = None
        self._turn_plan = TurnPlan(self.script)
        self._assigned = {}
        self._spoken_items = set()
        self._heard = {}
        self._tools_called = set()
        self._audio_out_started = False
        self._last_input_tokens = 0
        self.tokens = SessionTokens(limiter, now, default_limit=TOKENS_LIMIT)
        self._playback = {}
        self._playback_start = {}
        self._idle_since = now
        self.closed = False

    # ---- public entry points ----------------------------------------------------------------

    @_entry
    def start(self, now: float) -> list[Output]:
        """``session.created``, the first event of every new connection."""
        return [self.session_created()]

    @_entry
    def session_created(self) -> dict[str, Any]:
        return ev.event("session.created", session=wire_json.copy(self.config))

    @_entry
    def receive(self, text: str | bytes, now: float) -> list[Output]:
        """One client WebSocket frame (text, or bytes for a binary frame)."""
        try:
            out = self._receive(text, now)
            out.extend(self._run_due(now))
            return out
        except Exception as exc:  # a bug must not take the call down
            return mock_bug("receive", exc)

    @_entry
    def feed_audio(self, pcm: bytes, rate: int, now: float) -> list[Output]:
        """Caller audio from the media path (SIP) as PCM16 at ``rate``."""
        try:
            out = self._input_audio(pcm, rate, now)
            out.extend(self._run_due(now))
            return out
        except Exception as exc:
            return mock_bug("audio", exc)

    @_entry
    def advance(self, now: float) -> list[Output]:
        """Run timers that are due: transcriptions, paced response output, playback, idle timeout."""
        try:
            return self._run_due(now)
        except Exception as exc:
            return mock_bug("timer", exc)

    def next_deadline(self) -> float | None:
        deadlines = [self._timers[0][0]] if self._timers else []
        try:
            idle = self._idle_deadline()
        except Exception:  # never let a bad config stop the timer pump
            idle = None
        if idle is not None:
            deadlines.append(idle)
        return min(deadlines) if deadlines else None

    def dtmf(self, digit: str, now: float) -> list[Output]:
        """A DTMF digit from the SIP leg (``input_audio_buffer.dtmf_event_received``, no event_id)."""
        return [{"type": "input_audio_buffer.dtmf_event_received", "event": digit,
                 "received_at": int(self._wall(now))}]

    @_entry
    def media_speech_started(self, audio_ms: int, now: float) -> list[Output]:
        """Speech start found by the media path's own VAD (SIP workers hand over each
        turn's audio with its end, see :meth:`media_audio`).

        ``audio_ms`` is the first voiced caller-audio millisecond; the event's ``audio_start_ms``
        includes ``prefix_padding_ms`` as with the session's own VAD. Nothing is emitted for manual
        turns (``turn_detection: null``) or while a turn is already in progress.
        """
        try:
            self._pad_buffer_to(float(audio_ms))
            td = self._input_cfg().get("turn_detection")
            out: list[Output] = []
            if isinstance(td, dict) and self._pending_item_id is None:
                pad = int(or_default(td.get("prefix_padding_ms"), 300))
                out = self._speech_started(turns.padded_start(int(audio_ms), pad), now)
            out.extend(self._run_due(now))
            return out
        except Exception as exc:
            return mock_bug("audio", exc)

    @_entry
    def media_speech_stopped(self, audio_ms: int, detected_ms: int, now: float) -> list[Output]:
        """Speech end found by the media path's VAD: ``audio_ms`` the last voiced ms, ``detected_ms``
        when the silence ran out (the event's ``audio_end_ms``, as the real server reports it).

        Audio the media path did not hand over (before the turn's ``media_audio``, or none at all) is
        filled with silence up to ``detected_ms``: committed items, usage and ``input_audio_buffer.commit`` (manual
        turns) then see the caller's real durations.
        """
        try:
            self._pad_buffer_to(float(max(audio_ms, detected_ms)))
            td = self._input_cfg().get("turn_detection")
            out: list[Output] = []
            if isinstance(td, dict) and self._pending_item_id is not None:
                out = self._speech_stopped(int(max(audio_ms, detected_ms)), now)
            out.extend(self._run_due(now))
            return out
        except Exception as exc:
            return mock_bug("audio", exc)

    @_entry
    def media_audio(self, pcm: bytes, rate: int, start_ms: float, now: float) -> list[Output]:
        """Caller audio of a turn, handed over by the media path before its ``media_speech_stopped``.

        The SIP media path keeps caller audio in its worker and the input buffer holds silence in
        its place; a path that does hand a turn's audio over (from its speech start, padding
        included) has it laid in at audio time ``start_ms``, so the committed item holds what the
        caller really said and the recogniser hears it. No VAD runs on it: the media path's own
        speech events still decide the turn.
        """
        try:
            self._lay_in(pcm, rate, start_ms)
            return self._run_due(now)
        except Exception as exc:
            return mock_bug("audio", exc)

    # ---- dispatch ---------------------------------------------------------------------------

    def _receive(self, text: str | bytes, now: float) -> list[Output]:
        if isinstance(text, (bytes, bytearray)):
            return [ev.error("invalid_event",
                             "Expected a text WebSocket message; binary frames are not supported.")]
        try:
            msg = wire_json.loads(text)
        except wire_json.WireJSONError as exc:
            return [ev.error("invalid_json", f"Invalid event: failed to parse JSON value. {exc}")]
        if not isinstance(msg, dict):
            return [ev.error("invalid_event", "Invalid event: expected a JSON object.")]
        event_id = msg.get("event_id") if isinstance(msg.get("event_id"), str) else None
        bad = wire_json.lone_surrogate_in(text, msg)
        if bad is not None:  # kept, it would break every answer that shows it (the journal, an echoed item)
            return [ev.error("invalid_value", wire_json.lone_surrogate_message(bad), param=bad or None,
                             event_id=event_id if bad != "event_id" else None)]
        etype = msg.get("type")
        if "type" not in msg:
            return [ev.error("invalid_event", "The 'type' field is missing.", event_id=event_id)]
        supported = self._supported_types()
        if not isinstance(etype, str) or etype not in supported:
            return [ev.error("invalid_value",
                             f"Invalid value: '{etype}'. Supported values are: {_list(supported)}.",
                             param="type", event_id=event_id)]
        if "event_id" in msg and not isinstance(msg["event_id"], str):  # every client event's event_id is a string
            err = validate_payload(InputAudioBufferClearEventParam, {"type": "input_audio_buffer.clear",
                                                                     "event_id": msg["event_id"]}, "")
            if err:
                return [ev.param_error(err, None)]
        if etype == "session.close":
            self.closed = True
            return [Close(1000, "session closed")]
        bug = find(self.faults, "mock_bug")
        if bug is not None and etype == bug.param("event"):
            raise RuntimeError(f"mock_bug fault: a deliberate failure on {etype}")
        handler = getattr(self, "_on_" + etype.replace(".", "_"))
        if etype != "session.update":
            tp = RealtimeResponseCreateParamsWithReferencesParam if etype == "response.create" else None
            err = self._check_event(etype, msg, tp)
            if err:
                return [ev.param_error(err, event_id)]
        result: list[Output] = handler(msg, now, event_id)
        return result

    def _supported_types(self) -> tuple[str, ...]:
        types: tuple[str, ...] = ev.CLIENT_EVENT_TYPES
        if self.transport == "sip":
            types = (*types, *ev.SIP_ONLY_CLIENT_EVENTS)
        if self.kind == "transcription":
            types = tuple(t for t in types if not t.startswith("response.") and not t.startswith("output_"))
        return types

    def _check_event(self, etype: str, msg: dict[str, Any], response_tp: Any) -> Any:
        if etype == "response.create":
            for key in msg:
                if key not in ("type", "event_id", "response"):
                    return validate_payload(ResponseCancelEventParam, {key: 1}, "")  # unknown_parameter
            if "response" in msg and msg["response"] is not None:
                return validate_payload(response_tp, msg["response"], "response")
            return None
        return validate_payload(_EVENT_PARAMS[etype], msg, "")

    # ---- timers -------------------------------------------------------------------------------

    def _run_due(self, now: float) -> list[Output]:
        out: list[Output] = []
        while self._timers and self._timers[0][0] <= now:
            due, _, fn = heapq.heappop(self._timers)
            out.extend(fn(max(due, 0.0)))
        idle = self._idle_deadline()
        if idle is not None and now >= idle:
            out.extend(self._idle_timeout(now))
        return out

    def _wall(self, now: float) -> float:
        return self._wall0 + (now - self._mono0)


def _list(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}" if len(quoted) > 2 else " and ".join(quoted)
