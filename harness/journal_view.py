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


def event_type(entry: je.EntryData) -> str | None:
    """The Realtime event type of a ``ws.server``/``ws.client`` entry (None for any other entry)."""
    if isinstance(entry, je.WsServer | je.WsClient) and isinstance(entry.event, dict):
        t = entry.event.get("type")
        return None if t is None else str(t)
    return None


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
            elif entry_kind in ("ws.server", "ws.client"):
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
