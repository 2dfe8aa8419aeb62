"""Shapes of the ``/_mock/`` control API, shared by the server and the typed client."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .config import CheckedFaults, CheckedScript
from .journal_entries import EntryData, parse


class SipHeader(BaseModel):
    name: str = Field(min_length=1)
    value: str


class StartCallRequest(BaseModel):
    """POST /_mock/calls: an incoming call with no SIP leg (a virtual caller)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str = Field("sip:+15555550100@127.0.0.1", alias="from")
    to: str = Field("sip:proj_rtsip@127.0.0.1")
    headers: list[SipHeader] = Field(default_factory=list, description="Extra INVITE headers, order kept.")
    media_security: str | None = Field(None, pattern="^(rtp|srtp)$")
    faults: CheckedFaults = Field(default_factory=list)
    script: CheckedScript = None

    @field_validator("headers", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return [{"name": k, "value": v} for k, v in value.items()]
        if isinstance(value, list):
            return [{"name": v[0], "value": v[1]} if isinstance(v, list | tuple) and len(v) == 2 else v for v in value]
        return value


class SayRequest(BaseModel):
    """POST /_mock/calls/{call_id}/say: what the virtual caller speaks."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    fixture: str | None = Field(None, description="Name of a committed audio fixture.")
    path: str | None = Field(None, description="Any audio file pydub can read.")
    speed: float = Field(1.0, gt=0, le=50, description="1 = real time; more feeds faster.")
    trailing_silence_ms: int = Field(800, ge=0, le=10000)
    wait: bool = Field(False, description="Answer when the audio has been fed, not at once.")

    @model_validator(mode="after")
    def _one_source(self) -> SayRequest:
        if (self.fixture is None) == (self.path is None):
            raise ValueError("give exactly one of 'fixture' or 'path'")
        return self

    def pcm(self, rate: int = 8000) -> bytes:
        from audio_fixtures import fixture

        from . import audio

        if self.fixture is not None:
            return fixture(self.fixture).pcm(rate)
        return audio.load_audio(self.path or "", rate)


class StartCallResponse(BaseModel):
    call_id: str
    state: str


class JournalEntry(BaseModel):
    """One entry of a timeline as the control API serves it; :attr:`typed` is what it says, typed."""

    seq: int
    t_ms: float
    kind: str
    data: dict[str, Any]

    @property
    def typed(self) -> EntryData:
        """The entry's typed form (:mod:`mock_api.journal_entries`; :class:`Unknown` for a kind it does not know)."""
        return parse(self.kind, self.data)


class CallView(BaseModel):
    """A call with its whole timeline, as GET /_mock/calls/{call_id} returns it."""

    call_id: str
    live_id: str = Field("", description="The same call's GPT-Live session id (live.transport.incoming).")
    surface: str | None = Field(None, description="realtime or live: the surface that accepted or rejected it.")
    state: str
    terminal: bool
    transport: str
    created_at: float
    sip_headers: list[SipHeader]
    sip_final_status: int | None
    refer_target: str | None
    accept_body: dict[str, Any] | None
    end_reason: str | None
    started_at: float | None = None
    entries: list[JournalEntry] = Field(default_factory=list)
    # Filled by the harness, not the mock: what the caller's side saw (SIP calls) and sent.
    recording: str | None = Field(None, description="WAV of what the caller heard.")
    sent_audio: list[str] = Field(default_factory=list, description="Audio files the caller spoke.")
    caller: dict[str, Any] = Field(default_factory=dict, description="The caller's own marks and results.")

    def kinds(self) -> list[str]:
        return [e.kind for e in self.entries]

    def of_kind(self, kind: str) -> list[JournalEntry]:
        return [e for e in self.entries if e.kind == kind or e.kind.startswith(kind + ".")]


class CallList(BaseModel):
    calls: list[CallView]


# ---- stubs: canned answers for the rest of the API (PUT /_mock/stubs, scenario ``mock.stubs``) ----------------


MAX_PATH_REGEX = 2048
"""Characters in a stub's ``path_regex``: compiling a pattern of hundreds of kilobytes held the loop for most of a
second (the fuzz campaign found it), and no path the mock accepts needs more."""


class StubRequest(BaseModel):
    """What a request must look like for a stub to answer it; every field given must hold."""

    model_config = ConfigDict(extra="forbid")

    method: str | None = Field(None, description="HTTP method, any case; omitted: any method.")
    path: str | None = Field(None, pattern="^/", description="The exact path, e.g. /v1/embeddings. A request "
                             "to /openai/v1/... (Azure style) also matches its /v1/... path.")
    path_regex: str | None = Field(None, max_length=MAX_PATH_REGEX, description="A Python regex the whole path "
                                   "must match (re.fullmatch); compiled when the stub is set, so its length is capped.")
    query: dict[str, str] = Field(default_factory=dict, description="Query parameters and their exact values.")
    headers: dict[str, str] = Field(default_factory=dict, description="Headers (names in any case), exact values.")
    body: Any = Field(None, description="JSON the request body must contain: an object matches any object that "
                      "has its keys with matching values (recursively); an array matches an array of the same "
                      "length whose items match; other values must be equal. Omitted or null: any body.")

    @field_validator("method")
    @classmethod
    def _upper(cls, value: str | None) -> str | None:
        return value.upper() if value is not None else None

    @field_validator("path_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_path(self) -> StubRequest:
        if self.path is not None and self.path_regex is not None:
            raise ValueError("give at most one of 'path' or 'path_regex'")
        return self


class SseEvent(BaseModel):
    """One server-sent event of a streamed stub answer."""

    model_config = ConfigDict(extra="forbid")

    data: Any = Field(description="Sent as the event's data line: JSON, or a string as it is.")
    event: str | None = Field(None, description="The event's name (the Responses API names each event).")


class StubResponse(BaseModel):
    """What a stub answers: a JSON body, or a stream of server-sent events."""

    model_config = ConfigDict(extra="forbid")

    status: int = Field(200, ge=100, le=599)
    body: Any = Field(default_factory=dict, description="The JSON body (ignored when 'stream' is given).")
    headers: dict[str, str] = Field(default_factory=dict)
    delay_s: float = Field(0.0, ge=0, le=300, description="Wait this long before answering.")
    stream: list[SseEvent] | None = Field(None, description="Answer text/event-stream with these events.")
    stream_done: bool = Field(True, description="End a stream with 'data: [DONE]', as chat completions does.")

    @model_validator(mode="after")
    def _body_or_stream(self) -> StubResponse:
        if self.stream is not None and "body" in self.model_fields_set:
            raise ValueError("give either 'body' or 'stream', not both")
        return self


class Stub(BaseModel):
    """A request matcher and the answer it gets.

    ``lifetime``: ``permanent`` answers every matching request; ``oneshot`` answers one, then is used
    up; ``ordered`` stubs answer one request each, in the order they were given, and a request for a
    later one before its turn is an error.
    """

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, min_length=1, description="Unique among the stubs; given one if omitted.")
    name: str | None = Field(None, description="For people: shown in the journal and GET /_mock/stubs.")
    lifetime: Literal["permanent", "oneshot", "ordered"] = "permanent"
    request: StubRequest
    response: StubResponse = Field(default_factory=StubResponse)


def duplicate_stub_id(stubs: list[Stub], taken: set[str] | frozenset[str] = frozenset()) -> int | None:
    """The index of the first stub whose id is already taken (by ``taken`` or an earlier stub)."""
    seen = set(taken)
    for i, stub in enumerate(stubs):
        if stub.id is not None:
            if stub.id in seen:
                return i
            seen.add(stub.id)
    return None
