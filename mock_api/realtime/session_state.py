"""The state one Realtime session keeps, and the seams between the parts that change it.

:class:`~.session.RealtimeSession` is assembled from parts, one module each: config
(:mod:`.session_config`), the input buffer and turn detection (:mod:`.input_buffer`), hearing and
input transcription (:mod:`.hearing`), conversation items (:mod:`.conversation`), responses and
the fake model (:mod:`.responses`), output generation (:mod:`.generation`) and SIP playback
(:mod:`.playback`). This module declares what they share.

Rules:

- The core is pure. Time comes in only as ``now`` arguments (monotonic seconds, from the adapter)
  and the wall time at construction; ids only from the session's :class:`~mock_api.ids.IdSource`;
  reply audio files only through the injected ``audio_loader``; what the caller said only from the
  injected recogniser. Nothing here opens a socket, reads a clock or starts a thread, so one seed,
  one clock and one input replay a whole session byte for byte.
- Each field below names the parts that write it; every other part only reads it. The calls one
  part makes into another are the abstract methods below, and nothing else.
- Work that happens later is a timer (:meth:`SessionState._at`): a callable of ``now`` returning
  outputs, run in due order (ties in scheduling order) by the entry point that passes its time.
  A timer's callable checks whether it still applies (a cancelled response ignores its deltas).
- Nothing here raises out of the session: the facade's entry points turn an exception into a
  ``server_error`` and a :class:`~.outputs.MockBug`.
"""

from __future__ import annotations

import heapq
import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

from ..faults import Fault, find
from ..ids import IdSource
from ..limits import Reservation, SessionTokens
from ..recognisers import Recogniser, Recognition
from .outputs import Output
from .script import Script
from .turn_plan import Assignment, TurnPlan
from .vad import TurnDetector

Transport = Literal["websocket", "sip"]
Kind = Literal["realtime", "transcription"]
AudioLoader = Callable[[str, int], bytes]  # (path, rate) -> mono PCM16 at rate
Timer = Callable[[float], list[Output]]


@dataclass
class PlannedOutput:
    """One planned output item of a response and how much of it has been emitted."""

    item: dict[str, Any]
    text: str = ""  # message transcript / text, or function arguments
    pcm: bytes = b""
    rate: int = 24000
    emitted_text: str = ""
    emitted_ms: float = 0.0
    open: bool = False  # added but not done
    part_open: bool = False


@dataclass
class ResponseState:
    """One response: planned and ended by responses; its outputs' progress and ``started_audio`` by generation."""

    id: str
    in_conversation: bool
    modalities: list[str]
    voice: Any
    out_format: dict[str, Any]
    metadata: dict[str, Any] | None
    max_output_tokens: Any
    context_text_tokens: int
    context_audio_tokens: int
    outputs: list[PlannedOutput] = field(default_factory=list)
    status: str = "in_progress"
    started_audio: bool = False
    held: Reservation | None = None  # tokens reserved against the TPM budget at response.created


class SessionState(ABC):
    """Fields (set up by the facade's constructor) and the seams between the parts."""

    # fixed at construction (the facade)
    kind: Kind
    transport: Transport
    script: Script
    faults: list[Fault]
    sip_format: str
    sip_audio_deltas: bool
    recogniser: Recogniser | None  # None: recognisers.default_recogniser() (audio_fixtures/), on first use
    audio_loader: AudioLoader
    ids: IdSource
    media_corrupt: bool
    _format_forced: bool  # forced_format_static fired: an explicit audio format on the SIP leg
    conversation_id: str
    closed: bool
    _mono0: float  # the session's start on the monotonic clock
    _wall0: float  # and on the wall clock (unix s): what day a model's retirement is judged on
    # written by session_config
    config: dict[str, Any]
    # written by input_buffer
    _buffer: bytearray
    _buffer_start_ms: float
    _audio_ms: float  # all input audio ever written, in ms
    _pending_item_id: str | None
    _speech_start_ms: int | None
    _spoken_items: set[str]  # user audio items committed from the input buffer
    # written by session_config (rebuilt on update) and input_buffer (reset on commit and clear)
    _detector: TurnDetector | None
    # written by input_buffer (speech, idle timeout) and responses (created, done)
    _idle_since: float | None
    # written by conversation, input_buffer (commits) and generation (assistant items)
    items: list[dict[str, Any]]
    item_audio: dict[str, tuple[bytes, int]]
    # written by hearing, input_buffer and conversation (a by-order script assigns turns as items arrive)
    _turn_plan: TurnPlan
    _assigned: dict[str, Assignment]  # user item -> its script turn (turn_plan's rules)
    # written by hearing
    _heard: dict[str, Recognition | Future[Recognition]]  # what each user audio item said
    # written by responses
    _responses: dict[str, ResponseState]
    active_response_id: str | None
    _tools_called: set[int]  # script turns whose tool calls went out
    _last_input_tokens: int
    tokens: SessionTokens
    # written by generation
    _audio_out_started: bool
    _playback_start: dict[str, float]  # response_id -> when its audio started (monotonic s), SIP only
    # written by generation (audio out) and playback (ended, cleared)
    _playback: dict[str, float]  # response_id -> playback end (monotonic s), SIP only
    # pushed by every part (_at), popped by the facade's entry points
    _timers: list[tuple[float, int, Timer]]
    _seq: itertools.count[int]

    # ---- config, read by every part ---------------------------------------------------------

    def _input_cfg(self) -> dict[str, Any]:
        return (self.config.get("audio") or {}).get("input") or {}  # read-only: callers never mutate it

    def _input_format(self) -> str:
        return str((self._input_cfg().get("format") or {}).get("type") or "audio/pcm")

    def _output_format(self) -> str:
        out = (self.config.get("audio") or {}).get("output") or {}
        return str((out.get("format") or {}).get("type") or "audio/pcm")

    def _buffer_rate(self) -> int:
        return 24000 if self._input_format() == "audio/pcm" else 8000

    def _fault(self, name: str) -> bool:
        return find(self.faults, name) is not None

    # ---- timers -----------------------------------------------------------------------------

    def _at(self, due: float, fn: Timer) -> None:
        heapq.heappush(self._timers, (due, next(self._seq), fn))

    # ---- seams: what one part asks of another -----------------------------------------------

    @abstractmethod
    def _commit(self, item_id: str, now: float, start_ms: float | None = None,
                end_ms: float | None = None) -> list[Output]:
        """input_buffer: turn the buffer (or part of it) into a user audio item."""

    @abstractmethod
    def _idle_deadline(self) -> float | None:
        """input_buffer: when server_vad's idle timeout fires, if it can."""

    @abstractmethod
    def _idle_timeout(self, now: float) -> list[Output]:
        """input_buffer: commit what is there and prompt the model."""

    @abstractmethod
    def heard(self, item_id: str) -> str:
        """hearing: what the caller said in this audio item."""

    @abstractmethod
    def _assignment(self, item_id: str) -> Assignment:
        """hearing: the item's script turn."""

    @abstractmethod
    def recognition_pending(self, item_id: str) -> bool:
        """hearing: whether the caller's words in this item are still being worked out on a thread."""

    @abstractmethod
    def _listen(self, item_id: str, pcm: bytes, rate: int, now: float) -> list[Output]:
        """hearing: decide what the caller said in a new user audio item."""

    @abstractmethod
    def _schedule_transcription(self, item_id: str, audio_ms: float, now: float) -> None:
        """hearing: input transcription of a committed item, if configured."""

    @abstractmethod
    def _item(self, item_id: Any) -> dict[str, Any] | None:
        """conversation: the item with this id."""

    @abstractmethod
    def _prev_of(self, item_id: str) -> str | None:
        """conversation: the id of the item before this one."""

    @abstractmethod
    def _user_text(self, item: dict[str, Any]) -> str:
        """conversation: what the model understands from a user item."""

    @abstractmethod
    def _truncate(self, item: dict[str, Any], idx: int, end_ms: float) -> None:
        """conversation: cut an assistant item's audio (and transcript) at end_ms."""

    @abstractmethod
    def _create_response(self, params: dict[str, Any], now: float, event_id: str | None) -> list[Output]:
        """responses: start a response (response.create, or a turn that asks for one)."""

    @abstractmethod
    def _finish(self, resp: ResponseState, status: str, reason: str | None, now: float) -> list[Output]:
        """responses: end a response with response.done."""

    @abstractmethod
    def _schedule_output(self, resp: ResponseState, now: float) -> None:
        """generation: pace a planned response's output on timers."""

    @abstractmethod
    def _close_output(self, resp: ResponseState, out: PlannedOutput, idx: int, now: float) -> list[Output]:
        """generation: the done events of one output item."""

    @abstractmethod
    def _media_corrupt(self) -> bool:
        """playback: whether reply audio on the media path is garbled (static faults)."""

    @abstractmethod
    def _media_muted(self) -> bool:
        """playback: whether reply audio on the media path is replaced by silence (forced_format_static)."""

    @abstractmethod
    def _playback_done(self, resp: ResponseState, now: float) -> list[Output]:
        """playback: the media path finished playing a response."""

    @abstractmethod
    def _barge_in(self, now: float) -> list[Output]:
        """playback: caller speech during a reply."""
