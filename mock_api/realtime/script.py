"""Behaviour script: what the fake model hears and says, turn by turn.

A script is plain data (YAML or JSON, or a dict from ``PUT /_mock/config`` / the control
API), so a scenario can say "the caller says X, the model answers Y and calls tool Z"
without code. Session-level faults (``transcription_403``, ``static_after_update``...)
are named from :mod:`mock_api.faults`, the one registry of failure modes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from ..faults import Fault


class ToolCall(BaseModel):
    """A function call the model makes in a turn."""

    model_config = ConfigDict(extra="forbid")

    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    call_id: str | None = None

    def arguments_json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


class Turn(BaseModel):
    """One user turn and the model's answer to it."""

    model_config = ConfigDict(extra="forbid")

    match_clip: str | None = Field(
        None, description="Answer the caller's utterance recognised as this clip (an audio fixture's name, or a "
        "library clip's file stem) instead of the next turn in order. A committed turn holding only the start "
        "of that utterance (the 200 ms server_vad default commits at pauses) gets the script's partial_reply.")
    match_text: str | None = Field(
        None, description="Answer the caller's turn whose recognised words contain these (case and punctuation "
        "ignored) instead of the next turn in order.")
    hears: str | None = Field(None, description="Transcript of the user's audio for this turn.")
    says: str | None = Field(None, description="Assistant reply text (audio transcript or output_text).")
    audio: str | None = Field(None, description="WAV (or any pydub-readable) file spoken as the reply.")
    tool_calls: list[ToolCall] = Field(default_factory=list, description="Function calls made before answering.")
    after_tool: str | None = Field(None, description="Reply once the app sent the function_call_output.")
    language: str = Field("en", description="Language the caller speaks in this turn (ISO-639-1). Input "
                          "transcription forced to another language mis-hears it (see realtime/transcription.py).")


class Script(BaseModel):
    """Per-call or per-session behaviour of the fake model."""

    model_config = ConfigDict(extra="forbid")

    greeting: str | None = Field(None, description="Reply to a response.create before any user turn.")
    turns: list[Turn] = Field(default_factory=list)
    default_hears: str | None = Field(
        None, description="What the caller says in every turn without its own 'hears'. Unset: the audio "
        "decides (a known clip's sidecar text, or a plugged-in recogniser); audio nobody recognises is "
        "transcribed as '[unrecognised audio, N s]', never as invented words.")
    default_reply: str = "Sure, I can help you with that."
    partial_reply: str = Field(
        "Mm-hmm.", description="Reply to a committed turn that is only the start of an utterance a match_clip "
        "turn waits for; the caller usually talks over it.")
    transcription_delay_s: float = Field(0.4, ge=0, description="Commit → first transcription delta.")
    response_latency_s: float = Field(0.1, ge=0, description="response.created → first output delta.")
    generation_speed: float = Field(8.0, gt=0, description="Output audio generated this many times realtime.")
    ms_per_char: float = Field(60.0, gt=0, description="Length of synthesized reply audio per character.")
    faults: list[Fault] = Field(default_factory=list)

    @classmethod
    def load(cls, data: Script | dict[str, Any] | str | Path | None) -> Script:
        """From a dict, YAML/JSON text, or a path to a .yaml/.json file; ``None`` = defaults."""
        if data is None:
            return cls()
        if isinstance(data, Script):
            return data
        is_path = isinstance(data, str) and "\n" not in data and data.endswith((".yaml", ".yml", ".json"))
        if isinstance(data, Path) or (is_path and isinstance(data, str)):
            data = Path(data).read_text()
        if isinstance(data, str):
            data = yaml.safe_load(data) or {}
        return cls.model_validate(data)

    def turn(self, index: int) -> Turn:
        return self.turns[index] if 0 <= index < len(self.turns) else Turn()
