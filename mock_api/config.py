"""The mock's runtime configuration: one pydantic model, set at start and by PUT /_mock/config."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .faults import Fault


class RetryPolicy(BaseModel):
    """Bounded exponential backoff for webhook delivery (the real service retries for 72 h)."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(5, ge=1, le=50)
    initial_delay_s: float = Field(0.2, ge=0)
    max_delay_s: float = Field(5.0, ge=0)
    multiplier: float = Field(2.0, ge=1)
    timeout_s: float = Field(5.0, gt=0, description="Per-attempt time to wait for the receiver's answer.")

    def delay(self, attempt: int) -> float:
        """Delay before attempt number ``attempt + 1`` (``attempt`` counts from 1)."""
        return min(self.max_delay_s, self.initial_delay_s * self.multiplier ** (attempt - 1))


class LimitsConfig(BaseModel):
    """OpenAI-side limits (reference §1.3, §6 ``rate_limits.updated``, §8); every cap is off (None) by default.

    Budgets refill continuously over ``window_s`` (60 s, as the real per-minute limits do; tests
    shorten it so a spent budget comes back within a second).
    """

    model_config = ConfigDict(extra="forbid")

    max_concurrent_sessions: int | None = Field(
        None, ge=0, description="Active calls plus ?model= sockets; an accept beyond it answers 429.")
    requests_per_minute: int | None = Field(
        None, gt=0, description="REST call controls (accept, reject, refer, hangup); beyond it 429.")
    tokens_per_minute: int | None = Field(
        None, gt=0, description="Response tokens, shared by all sessions; a response over it fails.")
    window_s: float = Field(60.0, gt=0, description="Period over which the per-minute budgets refill.")


class MockConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    webhook_url: str | None = None
    webhook_secret: str | None = None
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    api_keys: list[str] | None = Field(
        None, description="Accepted API keys; None accepts any key that starts with 'sk-'."
    )
    strict_accept: bool = Field(False, description="Answer an invalid accept body with 400 instead of 200-then-fail.")
    legacy_beta: bool = Field(False, description="Serve OpenAI-Beta: realtime=v1 sockets instead of closing them.")
    ring_timeout_s: float | None = Field(30.0, gt=0, description="Fail a call nobody accepts within this time.")
    no_answer_status: int = Field(408, ge=400, le=699, description="SIP status sent to the caller on no answer.")
    max_body_bytes: int = Field(1 << 20, gt=0)
    faults: list[Fault] = Field(default_factory=list)
    script: dict[str, Any] | None = Field(None, description="Default behaviour script for new sessions.")
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    retain_ended_calls: int | None = Field(
        None, ge=1, description="Keep only this many ended calls (and their journals); None keeps all. Long "
        "soaks set it so the mock's memory stays flat.")


class ConfigPatch(BaseModel):
    """Body of PUT /_mock/config: only the fields present change."""

    model_config = ConfigDict(extra="forbid")

    webhook_url: str | None = None
    webhook_secret: str | None = None
    retry: RetryPolicy | None = None
    api_keys: list[str] | None = None
    strict_accept: bool | None = None
    legacy_beta: bool | None = None
    ring_timeout_s: float | None = Field(None, gt=0)
    no_answer_status: int | None = Field(None, ge=400, le=699)
    faults: list[Fault] | None = None
    script: dict[str, Any] | None = None
    retain_ended_calls: int | None = Field(None, ge=1)
    limits: LimitsConfig | None = Field(
        None, description="Merged into the current limits: only the caps present change (null turns one off); "
        "`\"limits\": null` turns them all off.")

    def apply(self, config: MockConfig) -> MockConfig:
        update = {k: getattr(self, k) for k in self.model_fields_set}
        if "limits" in self.model_fields_set:
            update["limits"] = LimitsConfig() if self.limits is None else config.limits.model_copy(
                update={k: getattr(self.limits, k) for k in self.limits.model_fields_set})
        return config.model_copy(update=update)
