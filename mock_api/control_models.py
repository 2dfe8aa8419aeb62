"""Shapes of the ``/_mock/`` control API, shared by the server and the typed client."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .faults import Fault


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
    faults: list[Fault] = Field(default_factory=list)
    script: dict[str, Any] | None = None

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

    model_config = ConfigDict(extra="forbid")

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
    seq: int
    t_ms: float
    kind: str
    data: dict[str, Any]


class CallView(BaseModel):
    """A call with its whole timeline, as GET /_mock/calls/{call_id} returns it."""

    call_id: str
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
