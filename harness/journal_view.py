"""One reader of journal timelines: typed entries with their times, and the questions the harness asks.

Runner expectations, load metrics, turn warnings and the reports all read a call's journal (the
entries of ``GET /_mock/calls/{id}``, a session's or the server's timeline, or the JSON report's
copy of them). They read it through :class:`JournalView`, so the keys of each entry kind are known
in one place (:mod:`mock_api.journal_entries`) and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from mock_api import journal_entries as je
from mock_api.control_models import CallView, JournalEntry

E = TypeVar("E", bound=je.EntryData)
E_co = TypeVar("E_co", bound=je.EntryData, covariant=True)
TRANSCRIPTION_EVENTS = ("conversation.item.input_audio_transcription.delta",
                        "conversation.item.input_audio_transcription.completed",
                        "conversation.item.input_audio_transcription.failed")


@dataclass(frozen=True, slots=True)
class Logged(Generic[E_co]):
    """One journal entry where it sits on its timeline: sequence number, ms since the timeline began."""

    seq: int
    t_ms: float
    entry: E_co

    @property
    def kind(self) -> str:
        return self.entry.journal_kind


def logged(entry: JournalEntry | Mapping[str, Any]) -> Logged[je.EntryData]:
    """A control API entry (or its JSON, as reports keep it) as a typed, timed entry."""
    if isinstance(entry, JournalEntry):
        return Logged(entry.seq, entry.t_ms, je.parse(entry.kind, entry.data))
    data = entry.get("data")
    return Logged(int(entry.get("seq", 0)), float(entry.get("t_ms", 0)),
                  je.parse(str(entry.get("kind", "")), data if isinstance(data, dict) else {}))


SOCKET_KINDS = ("ws.server", "ws.client", "live.server", "live.client")  # entries that carry an event


def event_type(entry: je.EntryData) -> str | None:
    """The event type of a Realtime (``ws.*``) or GPT-Live (``live.server``/``live.client``) socket entry
    (None for any other entry)."""
    if isinstance(entry, je.WsServer | je.WsClient | je.LiveServer | je.LiveClient) and isinstance(entry.event, dict):
        t = entry.event.get("type")
        return None if t is None else str(t)
    return None


@dataclass(frozen=True, slots=True)
class Line:
    """One thing said on the call, as the app was told it: who said it, the text, when (journal ms)."""

    who: str  # "caller" or "assistant"
    text: str
    t_ms: float


ENDED_BY = {"caller_hangup": "caller", "caller_cancelled": "caller", "hangup": "app", "rejected": "app",
            "referred": "app", "no_answer": "timeout",
            "ghost_timeout": "timeout"}  # CallView.end_reason -> who ended the call (a ghost call: the mock's timer)
SESSION_ENDS = {"close_requested": "app", "expired": "session", "content": "session",
                "remote_hangup": "caller", "connection_lost": "failure"}  # session.closed reason -> who


class JournalView:
    """A timeline's entries, typed, oldest first, with the queries its readers share."""

    __slots__ = ("entries",)

    def __init__(self, entries: Iterable[JournalEntry | Mapping[str, Any]]) -> None:
        self.entries: list[Logged[je.EntryData]] = [logged(e) for e in entries]

    @classmethod
    def of_call(cls, view: CallView) -> JournalView:
        return cls(view.entries)

    def __iter__(self) -> Iterator[Logged[je.EntryData]]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def kinds(self) -> set[str]:
        return {e.kind for e in self.entries}

    def of(self, cls: type[E], where: Callable[[E], bool] | None = None) -> list[Logged[E]]:
        """Every entry of one kind (that ``where`` holds for), oldest first."""
        out: list[Logged[E]] = []
        for e in self.entries:
            if isinstance(e.entry, cls) and (where is None or where(e.entry)):
                out.append(cast("Logged[E]", e))  # its entry is an E
        return out

    def has(self, cls: type[je.EntryData]) -> bool:
        return any(isinstance(e.entry, cls) for e in self.entries)

    def count(self, kind: str) -> int:
        """Entries of a journal kind (``caller.say``) plus Realtime events of that type (``response.done``)
        sent or received: what a caller step waits for."""
        return sum(1 for e in self.entries if e.kind == kind or event_type(e.entry) == kind)

    @staticmethod
    def count_raw(entries: Iterable[Mapping[str, Any]], kind: str) -> int:
        """:meth:`count` over the control API's JSON entries without typing them: a load driver polls every
        call's journal several times a second, and building its entries each time would cost the run."""
        n = 0
        for entry in entries:
            entry_kind = entry.get("kind")
            if entry_kind == kind:
                n += 1
            elif entry_kind in SOCKET_KINDS:
                event = (entry.get("data") or {}).get("event")
                n += isinstance(event, dict) and event.get("type") == kind
        return n

    def first(self, cls: type[E], where: Callable[[E], bool] | None = None,
              after: float = -1.0) -> Logged[E] | None:
        """The first entry of one kind at or after ``after`` ms (that ``where`` holds for)."""
        return next((e for e in self.of(cls, where) if e.t_ms >= after), None)

    # ---- the Realtime session ----------------------------------------------------------------------

    def server_events(self, type_: str | None = None) -> list[Logged[je.WsServer]]:
        """Server events sent to the app (of one type), oldest first."""
        return self.of(je.WsServer, lambda w: isinstance(w.event, dict)
                       and (type_ is None or w.event.get("type") == type_))

    def client_event_types(self) -> list[str]:
        """The types of the client events the app sent, in order."""
        return [str(e.entry.event.get("type")) for e in self.of(je.WsClient) if isinstance(e.entry.event, dict)]

    def first_event(self, types: Iterable[str], after: float = -1.0) -> Logged[je.EntryData] | None:
        """The first ``ws.server``/``ws.client`` event of one of ``types`` at or after ``after`` ms."""
        wanted = set(types)
        return next((e for e in self.entries if e.t_ms >= after and event_type(e.entry) in wanted), None)

    def speech_stops(self) -> list[Logged[je.EntryData]]:
        """Where the caller's turns ended: the SIP leg's VAD (sip mode), else the session's speech_stopped."""
        sip: list[Logged[je.EntryData]] = list(self.of(je.SipSpeechStopped))
        if sip:
            return sip
        return list(self.server_events("input_audio_buffer.speech_stopped"))

    def first_audio_after(self, t_ms: float) -> Logged[je.AudioOut] | None:
        """The first reply audio chunk sent at or after ``t_ms``."""
        return self.first(je.AudioOut, after=t_ms)

    # ---- the call's REST and webhook side ------------------------------------------------------------

    def accepts(self) -> list[Logged[je.RestRequest]]:
        """The app's accept requests."""
        return self.of(je.RestRequest, lambda r: r.op == "accept")

    def webhook_sent_ms(self, attempt: Logged[je.WebhookAttempt]) -> float:
        """When a webhook attempt was sent (it is journaled when its answer came, ``latency_ms`` later)."""
        return attempt.t_ms - float(attempt.entry.latency_ms or 0)

    def mock_bugs(self) -> list[Logged[je.MockBug]]:
        return self.of(je.MockBug)

    # ---- either surface: what was said, keys, latencies, the end -------------------------------------

    def live_events(self) -> list[str]:
        """GPT-Live server event types that reached a sideband, in order (none attached: not counted)."""
        return [str(e.entry.event.get("type")) for e in self.of(je.LiveServer) if e.entry.to]

    def live_client_types(self) -> list[str]:
        """The GPT-Live commands the app sent on its sidebands, in order."""
        return [str(e.entry.event.get("type")) for e in self.of(je.LiveClient) if isinstance(e.entry.event, dict)]

    def live_server_events(self, type_: str) -> list[Logged[je.LiveServer]]:
        return self.of(je.LiveServer, lambda s: s.event.get("type") == type_)

    def lines(self) -> list[Line]:
        """The conversation as the app received it: Realtime's completed input transcriptions and reply
        transcripts, or GPT-Live's transcript deltas that reached a sideband, joined into one line per run of
        one speaker."""
        out: list[Line] = []
        run: str | None = None  # the speaker of the Live line still taking deltas
        for e in self.entries:
            t = event_type(e.entry)
            if isinstance(e.entry, je.WsServer):
                ev = e.entry.event
                if t == "conversation.item.input_audio_transcription.completed":
                    out.append(Line("caller", str(ev.get("transcript") or ""), e.t_ms))
                elif t == "response.output_audio_transcript.done":
                    out.append(Line("assistant", str(ev.get("transcript") or ""), e.t_ms))
            elif isinstance(e.entry, je.LiveServer) and t in _LIVE_WORDS and e.entry.to:
                who, delta = _LIVE_WORDS[t], str(e.entry.event.get("delta") or "")
                if run == who:
                    out[-1] = Line(who, out[-1].text + delta, out[-1].t_ms)
                else:
                    out.append(Line(who, delta, e.t_ms))
                    run = who
        return [Line(line.who, line.text.strip(), line.t_ms) for line in out]

    def said(self, who: str) -> list[str]:
        return [line.text for line in self.lines() if line.who == who]

    def dtmf_to_app(self) -> str:
        """The caller's keys as the app was told them (Realtime's dtmf_event_received, Live's dtmf.received)."""
        realtime = [str(e.entry.event.get("event"))
                    for e in self.server_events("input_audio_buffer.dtmf_event_received")]
        live = [str(e.entry.event.get("event")) for e in self.live_server_events("transport.dtmf.received")]
        return "".join(realtime + live)

    def dtmf_to_caller(self) -> str:
        """Keys the app had sent to the caller (GPT-Live's ``transport.dtmf.send``)."""
        return "".join(e.entry.digit for e in self.of(je.LiveDtmfOut))

    def closed_reason(self) -> str | None:
        """The reason of the GPT-Live ``session.closed`` (None: the session never closed, or not Live)."""
        closed = self.live_server_events("session.closed")
        return None if not closed else str(closed[-1].entry.event.get("reason"))

    def turn_ends(self) -> list[float]:
        """Where the caller's turns ended, journal ms: the SIP leg's VAD, Realtime's speech_stopped, else a
        Live turn's end on the session timeline (``live.heard``) placed from the session's start."""
        stops = self.speech_stops()
        if stops:
            return [e.t_ms for e in stops]
        started = self.live_server_events("session.started")
        if not started:
            return []
        return [started[0].t_ms + e.entry.end_ms for e in self.of(je.LiveHeard)]

    def turn_latencies(self) -> list[float]:
        """For each caller turn, ms from its end to the first reply audio sent to the caller after it."""
        out: list[float] = []
        for end in self.turn_ends():
            audio = self.first_audio_after(end)
            if audio is not None:
                out.append(round(audio.t_ms - end, 1))
        return out

    def ended_by(self, end_reason: str | None) -> str | None:
        """Who ended the call: caller, app, session (expiry, safety), timeout, failure; None while it lasts.
        A Live session's own close says it best; else the call's ``end_reason``."""
        reason = self.closed_reason()
        if reason is not None:
            return SESSION_ENDS.get(reason, reason)
        if end_reason is None:
            return None
        return ENDED_BY.get(end_reason, "failure")


_LIVE_WORDS = {"session.input_transcript.delta": "caller", "session.output_transcript.delta": "assistant"}
