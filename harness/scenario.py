"""Scenario files: the schema (pydantic), YAML loading with file:line errors, seeded faker values.

A scenario names the app under test, the fake model's script and faults, the calls to
place and what must hold afterwards. ``load_scenario`` is the only entry point; every
mistake in a file comes back as one :class:`ScenarioError` naming the file, the line and
what was expected there.

Surface rules (``surface:``, per scenario or per variant):

1. ``realtime`` (the default): the app is offered ``realtime.call.incoming``; ``live``:
   ``live.transport.incoming``; ``both``: both, and ``expect.surface`` must say which one wins
   (the first accept on either surface owns the call).
2. An expectation only one surface can meet (:data:`REALTIME_ONLY`, :data:`LIVE_ONLY`) is an error
   in a scenario whose (winning) surface is the other one, naming its line.
3. A ``wait_for`` naming an event type that only the other surface's SDK union declares would wait
   in vain: the same error.
4. ``compare: true`` runs every variant and reports them side by side; each variant may bring its
   own ``command`` and ``surface`` (a migration from one app to another).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from faker import Faker
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from audio_fixtures import FixtureNotFound
from audio_fixtures import fixture as find_fixture
from mock_api.control_models import Stub, duplicate_stub_id
from mock_api.faults import Fault
from mock_api.realtime.script import Script

Path_ = tuple[str | int, ...]
Surface = Literal["realtime", "live", "both"]
Owner = Literal["realtime", "live"]
SURFACE_EVENTS: dict[str, list[str]] = {  # what a call sends the app, per scenario surface
    "realtime": ["realtime.call.incoming"],
    "live": ["live.transport.incoming"],
    "both": ["realtime.call.incoming", "live.transport.incoming"],
}
CloseReason = Literal["close_requested", "expired", "content", "remote_hangup", "connection_lost"]
EndedBy = Literal["caller", "app", "session", "timeout", "failure"]


class ScenarioError(ValueError):
    def __init__(self, file: Path | str, line: int | None, message: str) -> None:
        self.file, self.line, self.detail = str(file), line, message
        super().__init__(f"{file}:{line if line is not None else '?'}: {message}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# ---- the app under test ----------------------------------------------------------------------


class ReadyProbe(_Strict):
    """How the runner knows the app is up: an HTTP GET answering < 500, or a line on its output."""

    http: str | None = Field(None, description="Path to GET on the app, e.g. /healthz.")
    log: str | None = Field(None, description="Regex a line of the app's output must match.")
    timeout_s: float = Field(20.0, gt=0)

    @model_validator(mode="after")
    def _one(self) -> ReadyProbe:
        if (self.http is None) == (self.log is None):
            raise ValueError("give exactly one of 'http' or 'log'")
        return self


class AppSpec(_Strict):
    command: list[str] = Field(min_length=1, description="argv of the app; {port} is replaced by its port.")
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = Field(None, description="Working directory, relative to the scenario file (default: its folder).")
    webhook_path: str = Field("/webhook", pattern="^/")
    ready: ReadyProbe = Field(default_factory=lambda: ReadyProbe(http="/healthz"))
    openai: Literal["base_url", "intercept"] = Field(
        "base_url", description="base_url: OPENAI_BASE_URL points at the mock; intercept: HTTPS_PROXY + CA."
    )


# ---- the calls --------------------------------------------------------------------------------


class Step(_Strict):
    """One thing the caller does. Exactly one action per step."""

    say: str | None = Field(None, description="Audio fixture name, or a path to an audio file.")
    pause_ms: int | None = Field(None, ge=0)
    dtmf: str | None = Field(None, pattern=r"^[0-9A-D*#]+$")
    barge_in: str | None = Field(None, description="Fixture spoken over the assistant's reply.")
    wait_for: str | None = Field(None, description="Journal event kind to wait for, e.g. response.done.")
    hangup: bool | None = None
    hold_ms: int | None = Field(None, ge=1, le=600_000, description="Put the far side on hold this long (a "
                                "re-INVITE with a=sendonly), then resume it (a=sendrecv). mode: sip only.")
    new_ssrc: Literal[True] | None = Field(None, description="The caller's RTP goes on as a new source (a new SSRC "
                                           "and sequence, same port, no re-INVITE), as when a carrier's session "
                                           "border controller fails over; once the mock has heard the first "
                                           "(its journal's sip.ssrc). mode: sip only.")

    @model_validator(mode="after")
    def _one_action(self) -> Step:
        set_ = [k for k in STEP_ACTIONS if getattr(self, k) is not None]
        if len(set_) != 1:
            raise ValueError(f"a step takes exactly one of {', '.join(STEP_ACTIONS)}; got {set_}")
        return self


STEP_ACTIONS = ("say", "pause_ms", "dtmf", "barge_in", "wait_for", "hangup", "hold_ms", "new_ssrc")
SIP_ONLY_STEPS = {"hold_ms": "a virtual caller has no media to hold", "new_ssrc": "a virtual caller sends no RTP"}


class CallSpec(_Strict):
    mode: Literal["virtual", "sip"] = "virtual"
    from_: str = Field("sip:+15555550100@127.0.0.1", alias="from",
                       description="The caller's URI, the From the app sees (sip:, sips: or tel:; in sip mode a "
                                   "tel: number is sent as sip:<number>@<mock host>;user=phone).")
    display_name: str | None = Field(None, pattern=r"^[^\x00-\x1f\x7f]*$",
                                     description="The caller's name in the From: \"NAME\" <from> (one line).")
    to: str = Field("sip:proj_rtsip@127.0.0.1", description="The To the app sees (in sip mode, when not set: the "
                                                               "mock's SIP URI, which the INVITE is sent to anyway).")
    headers: dict[str, str] = Field(default_factory=dict)
    steps: list[Step] = Field(default_factory=list)
    faults: list[Fault] = Field(default_factory=list)
    speed: float = Field(1.0, gt=0, le=20, description="How fast a virtual caller feeds its audio (1 = real time).")
    max_duration_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _media_steps_need_sip(self) -> CallSpec:
        for name, why in SIP_ONLY_STEPS.items():
            if self.mode != "sip" and any(getattr(step, name) is not None for step in self.steps):
                raise ValueError(f"a {name} step needs mode: sip ({why})")
        if self.mode == "sip" and self.faults:
            raise ValueError("a sip call takes no faults of its own (the mock makes the call when its INVITE "
                             "arrives): give them in mock.faults, or in a variant's faults")
        return self


# ---- expectations -------------------------------------------------------------------------------


class ClientEvents(_Strict):
    sent: list[str] = Field(default_factory=list, description="Event types the app must send.")
    not_sent: list[str] = Field(default_factory=list)
    order: list[str] = Field(default_factory=list, description="These types, first occurrences in this order.")


class ServerError(_Strict):
    code: str | None = None
    message: str | None = Field(None, description="Regex on error.message.")
    param: str | None = None


class HttpCheck(_Strict):
    path: str = Field(pattern="^/", description="GET on the app; {call_id} is replaced.")
    status: int = 200
    contains: list[str] = Field(default_factory=list)
    regex: str | None = None


class RangeMs(_Strict):
    max: float | None = None
    min: float | None = None


class _Bounded(_Strict):
    @model_validator(mode="after")
    def _some_bound(self) -> _Bounded:
        if not self.model_fields_set:
            raise ValueError(f"give at least one of {', '.join(type(self).model_fields)}")
        return self


class TimingRange(_Bounded):
    """Bounds on one figure, in ms: ``max`` the most it may be, ``min`` the least."""

    max: float | None = Field(None, ge=0)
    min: float | None = Field(None, ge=0)


class TimingSpread(_Bounded):
    """Bounds on a figure measured many times in a call (each turn, each barge-in), in ms: ``max`` and ``min``
    bound every sample; ``p50``/``p90``/``p95``/``p99`` (nearest rank) and ``mean`` are the most they may be."""

    max: float | None = Field(None, ge=0)
    min: float | None = Field(None, ge=0)
    p50: float | None = Field(None, ge=0)
    p90: float | None = Field(None, ge=0)
    p95: float | None = Field(None, ge=0)
    p99: float | None = Field(None, ge=0)
    mean: float | None = Field(None, ge=0)


class CountRange(_Bounded):
    max: int | None = Field(None, ge=0)
    min: int | None = Field(None, ge=0)


class TimingExpect(_Strict):
    """The call's timing figures (harness/timing.py), each from its journal; a figure the call never had
    (no reply audio, no barge-in) fails its check."""

    first_audio_ms: TimingRange | None = Field(None, description="Answer → first reply audio at the caller.")
    turn_latency_ms: TimingSpread | None = Field(None, description="Each caller turn's end → the first reply "
                                                 "audio at the caller after it.")
    dead_air_ms: TimingRange | None = Field(None, description="The longest silence (neither side speaking) while "
                                            "the call is up: max to forbid dead air, min to prove it.")
    barge_in_ms: TimingSpread | None = Field(None, description="Caller speech starting over reply audio → that "
                                             "audio stopped (cleared, or ran out).")
    overlap_ms: TimingRange | None = Field(None, description="Total ms the caller and reply audio overlapped.")
    overlaps: CountRange | None = Field(None, description="How many times the caller and reply audio overlapped.")


class Expectations(_Strict):
    call_state: str | None = Field(None, description="Final state: ended, rejected, referred, failed, no_answer.")
    accept: dict[str, Any] | None = Field(None, description="Dotted paths into the accept body and their values.")
    accepted: bool | None = None
    client_events: ClientEvents | None = None
    server_errors: list[ServerError] | None = Field(None, description="Errors the app must receive; [] = none.")
    transcription_events: Literal["completed", "failed", "none"] | None = None
    sip_final_status: int | None = None
    refer_target: str | None = None
    app_output: list[str] = Field(default_factory=list, description="Regexes the app's output must match.")
    app_output_absent: list[str] = Field(default_factory=list)
    http: list[HttpCheck] = Field(default_factory=list)
    time_to_first_audio_ms: RangeMs | None = None
    timing: TimingExpect | None = Field(None, description="Thresholds on the call's timing figures: first audio, "
                                        "turn latency, dead air, barge-in reaction, overlaps (ms).")
    webhook_status: int | None = Field(None, description="Status the app answered the (last) webhook with.")
    effective_session: dict[str, Any] | None = Field(
        None, description="Dotted paths into the last session.created/updated the app received, and their values."
    )
    media_corrupt: bool | None = Field(None, description="Whether reply audio to the caller was garbled (static).")
    ws_connected: bool | None = Field(None, description="Whether the app opened the call's Realtime WebSocket.")
    # either surface
    surface: Owner | None = Field(None, description="The surface that must own the call (accept or reject went "
                                  "through it): realtime or live. Required with surface: both.")
    caller_said: list[str] = Field(default_factory=list, description="Text the app must have been given as the "
                                   "caller's words (case-insensitive substrings of its transcript lines).")
    assistant_said: list[str] = Field(default_factory=list, description="Text the model must have said (its "
                                      "transcript, as the app received it).")
    reply_heard: bool | None = Field(None, description="Whether reply audio reached the caller.")
    dtmf_received: str | None = Field(None, pattern=r"^[0-9A-D*#]*$",
                                      description="The caller's keys as the app was told them, in order.")
    ended_by: EndedBy | None = Field(None, description="Who ended the call: caller, app, session (GPT-Live expiry "
                                     "or safety), timeout (nobody answered), failure.")
    # GPT-Live
    live_events: list[str] | None = Field(None, description="GPT-Live server event types a sideband must have "
                                          "received, in this order (others may come between).")
    closed_reason: CloseReason | None = Field(None, description="The reason of the GPT-Live session.closed.")
    dtmf_sent: str | None = Field(None, pattern=r"^[0-9A-D*#]*$",
                                  description="Keys the app sent the caller (GPT-Live transport.dtmf.send).")


REALTIME_ONLY = frozenset({"transcription_events", "ws_connected"})
LIVE_ONLY = frozenset({"live_events", "closed_reason", "dtmf_sent"})


# ---- the scenario --------------------------------------------------------------------------------


class FakerVar(_Strict):
    provider: str = Field(description="A faker provider method, e.g. name, phone_number, numerify.")
    args: list[Any] = Field(default_factory=list)


class MockSpec(_Strict):
    script: Script = Field(default_factory=Script)
    faults: list[Fault] = Field(default_factory=list)
    strict_accept: bool = False
    legacy_beta: bool = False
    ring_timeout_s: float | None = Field(None, gt=0)
    retry_attempts: int = Field(3, ge=1, le=20, description="Webhook delivery attempts before giving up.")
    stubs: list[Stub] = Field(default_factory=list, description="Canned answers for other API requests (chat "
                              "completions, embeddings...), as PUT /_mock/stubs takes them; see docs/stubs.md.")

    @field_validator("stubs")
    @classmethod
    def _unique_ids(cls, value: list[Stub]) -> list[Stub]:
        dup = duplicate_stub_id(value)
        if dup is not None:
            raise ValueError(f"stub {dup}: the id {value[dup].id!r} is already used; stub ids must be unique")
        return value


class Variant(_Strict):
    """One version of the app (e.g. the forum's buggy one and the fixed one) with its own expectations."""

    command: list[str] | None = Field(None, min_length=1, description="Replaces app.command (another app, e.g. "
                                      "the one migrated to GPT-Live).")
    surface: Surface | None = Field(None, description="Replaces the scenario's surface.")
    app_args: list[str] = Field(default_factory=list, description="Appended to app.command.")
    env: dict[str, str] = Field(default_factory=dict)
    faults: list[Fault] = Field(default_factory=list, description="Added to mock.faults.")
    expect: Expectations = Field(default_factory=Expectations)


class Scenario(_Strict):
    name: str
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    seed: int = 0
    surface: Surface = Field("realtime", description="Which incoming-call webhook the app is sent: "
                             "realtime.call.incoming, live.transport.incoming (GPT-Live) or both.")
    compare: bool = Field(False, description="Report the variants side by side (transcripts, turn latencies, "
                          "DTMF, how each call ended), e.g. the same caller against a Realtime and a GPT-Live app.")
    vars: dict[str, Annotated[FakerVar | str, Field(union_mode="left_to_right")]] = Field(default_factory=dict)
    app: AppSpec
    mock: MockSpec = Field(default_factory=MockSpec)
    calls: list[CallSpec] = Field(min_length=1)
    expect: Expectations = Field(default_factory=Expectations)
    variants: dict[str, Variant] = Field(
        default_factory=dict, description="Run once per variant (e.g. buggy, fixed), each with its own checks."
    )
    source: str | None = Field(None, exclude=True, description="Set by the loader: the file path.")
    family: str = Field("", exclude=True, description="Set by expand: the scenario's name before its variant's.")

    @field_validator("vars")
    @classmethod
    def _providers_exist(cls, value: dict[str, FakerVar | str]) -> dict[str, FakerVar | str]:
        fake = Faker()
        for name, var in value.items():
            provider = var.provider if isinstance(var, FakerVar) else var
            if not callable(getattr(fake, provider, None)):
                raise ValueError(f"var {name!r}: faker has no provider {provider!r}")
        return value


def expand(scenario: Scenario) -> list[Scenario]:
    """One runnable scenario per variant (``name[variant]``), or the scenario itself."""
    if not scenario.variants:
        return [scenario.model_copy(update={"family": scenario.name})]
    out = []
    for vname, v in scenario.variants.items():
        expect = Expectations.model_validate(
            {**scenario.expect.model_dump(exclude_unset=True), **v.expect.model_dump(exclude_unset=True)}
        )
        app = scenario.app.model_copy(update={"command": [*(v.command or scenario.app.command), *v.app_args],
                                              "env": {**scenario.app.env, **v.env}})
        mock = scenario.mock.model_copy(update={"faults": [*scenario.mock.faults, *v.faults]})
        out.append(scenario.model_copy(update={"name": f"{scenario.name}[{vname}]", "family": scenario.name,
                                               "app": app, "mock": mock,
                                               "expect": expect, "variants": {},
                                               "surface": v.surface or scenario.surface}))
    return out


def json_schema() -> dict[str, Any]:
    """The JSON Schema editors use (``rtsip schema`` prints it)."""
    return Scenario.model_json_schema(by_alias=True)


# ---- loading with line numbers ---------------------------------------------------------------------


def _compose(text: str, file: Path) -> tuple[Any, dict[Path_, int]]:
    """Load YAML and remember the 1-based line of every mapping key and sequence item."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ScenarioError(
            file, mark.line + 1 if mark else None, f"not valid YAML: {getattr(exc, 'problem', exc)}"
        ) from None
    lines: dict[Path_, int] = {}

    def walk(n: yaml.Node | None, path: Path_) -> None:
        if n is None:
            return
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = k.value
                lines[(*path, key)] = k.start_mark.line + 1
                walk(v, (*path, key))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, (*path, i))

    walk(node, ())
    data = yaml.safe_load(text) if node is not None else None
    return data, lines


def _line_for(lines: dict[Path_, int], loc: Path_) -> int | None:
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def _render(data: Any, values: dict[str, str], file: Path, lines: dict[Path_, int], path: Path_ = ()) -> Any:
    if isinstance(data, dict):
        return {k: _render(v, values, file, lines, (*path, k)) for k, v in data.items()}
    if isinstance(data, list):
        return [_render(v, values, file, lines, (*path, i)) for i, v in enumerate(data)]
    if isinstance(data, str):

        def sub(m: re.Match[str]) -> str:
            if m.group(1) not in values:
                known = ", ".join(sorted(values)) or "none defined"
                raise ScenarioError(
                    file, _line_for(lines, path), f"unknown variable {{{{ {m.group(1)} }}}}; vars: {known}"
                )
            return values[m.group(1)]

        return _VAR.sub(sub, data)
    return data


def faker_values(vars_: dict[str, FakerVar | str], seed: int) -> dict[str, str]:
    """Seeded: the same file and seed give the same caller numbers, names and policy numbers."""
    fake = Faker()
    fake.seed_instance(seed)
    out: dict[str, str] = {}
    for name, var in vars_.items():
        spec = var if isinstance(var, FakerVar) else FakerVar(provider=var)
        out[name] = str(getattr(fake, spec.provider)(*spec.args))
    return out


def _loc_text(loc: Path_) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def load_scenario(path: str | Path, seed: int | None = None) -> Scenario:
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ScenarioError(file, None, f"cannot read: {exc.strerror}") from None
    data, lines = _compose(text, file)
    if not isinstance(data, dict):
        raise ScenarioError(file, 1, "expected a mapping with at least 'name', 'app' and 'calls'")
    raw_vars = data.get("vars") or {}
    try:
        vars_model = Scenario.model_validate({"name": "x", "app": {"command": ["x"]}, "calls": [{}], "vars": raw_vars})
    except ValidationError as exc:
        _raise(file, lines, exc)
    used_seed = seed if seed is not None else int(data.get("seed", 0) or 0)
    values = faker_values(vars_model.vars, used_seed)
    rendered = _render(data, values, file, lines)
    try:
        scenario = Scenario.model_validate(rendered)
    except ValidationError as exc:
        _raise(file, lines, exc)
    scenario.source = str(file)
    scenario.seed = used_seed
    _check_fixtures(scenario, file, lines)
    _check_surfaces(scenario, file, lines)
    return scenario


def winner(surface: Surface, expect: Expectations) -> Owner:
    """The surface a run's checks are read on: its own, or for ``both`` the one that must win."""
    if surface != "both":
        return surface
    return expect.surface or "realtime"


@cache
def _event_types(union: str) -> frozenset[str]:
    """Every server event type an SDK union declares (``realtime``: RealtimeServerEvent; ``live``: the
    sideband's ConnectServerEvent), read from the SDK's own models."""
    from openai.types.live import ConnectServerEvent
    from openai.types.realtime import RealtimeServerEvent

    root = ConnectServerEvent if union == "live" else RealtimeServerEvent
    found: set[str] = set()
    for model in _union_models(root):
        field = model.model_fields.get("type")
        if field is not None:
            found.update(a for a in getattr(field.annotation, "__args__", ()) if isinstance(a, str))
    return frozenset(found)


def _union_models(ann: Any) -> list[type[BaseModel]]:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    return [m for arg in getattr(ann, "__args__", ()) for m in _union_models(arg)]


def _check_surfaces(scenario: Scenario, file: Path, lines: dict[Path_, int]) -> None:
    """Rules 1-4 of the module: each run's expectations and waits must be ones its surface can meet, and a
    comparison needs something to compare."""
    if scenario.compare and len(scenario.variants) < 2:
        raise ScenarioError(file, _line_for(lines, ("compare",)), "at compare: compare: true needs at least two "
                            "variants to put side by side")
    runs: list[tuple[Path_, Surface, Expectations, set[str]]] = []
    base_keys = set(scenario.expect.model_fields_set)
    if not scenario.variants:
        runs.append((("expect",), scenario.surface, scenario.expect, base_keys))
    for name, v in scenario.variants.items():
        merged = Expectations.model_validate({**scenario.expect.model_dump(exclude_unset=True),
                                              **v.expect.model_dump(exclude_unset=True)})
        runs.append((("variants", name, "expect"), v.surface or scenario.surface, merged,
                     base_keys | set(v.expect.model_fields_set)))
    for where, surface, expect, keys in runs:
        if surface == "both" and expect.surface is None:
            loc = ("surface",) if ("surface",) in lines else where
            raise ScenarioError(file, _line_for(lines, loc), f"at {_loc_text(where)}: surface: both needs "
                                "expect.surface (realtime or live): which surface must win the call")
        owner = winner(surface, expect)
        wrong = sorted(keys & (REALTIME_ONLY if owner == "live" else LIVE_ONLY))
        for key in wrong:
            loc = (*where, key) if (*where, key) in lines else ("expect", key)
            raise ScenarioError(file, _line_for(lines, loc), f"at {_loc_text(loc)}: {key} is a "
                                f"{'Realtime' if owner == 'live' else 'GPT-Live'}-only expectation, and this run's "
                                f"calls are on the {owner} surface")
        other = "realtime" if owner == "live" else "live"
        for ci, call in enumerate(scenario.calls):
            for si, step in enumerate(call.steps):
                t = step.wait_for
                if t is not None and t in _event_types(other) and t not in _event_types(owner):
                    loc = ("calls", ci, "steps", si, "wait_for")
                    raise ScenarioError(file, _line_for(lines, loc), f"at {_loc_text(loc)}: {t} is a {other} "
                                        f"event; on the {owner} surface it never comes")


def _raise(file: Path, lines: dict[Path_, int], exc: ValidationError) -> None:
    err = exc.errors()[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in {"FakerVar", "str"}))
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = f"unknown key '{loc[-1]}'"
        parent = loc[:-1]
        model = _model_at(parent)
        if model is not None:
            allowed = ", ".join(f.alias or n for n, f in model.model_fields.items() if not f.exclude)
            msg += f"; expected one of: {allowed}"
    elif err["type"] == "missing":
        msg = f"missing required key '{loc[-1]}'"
    else:
        msg = (
            f"{msg} (got {err.get('input')!r})" if "input" in err and not isinstance(err["input"], dict | list) else msg
        )
    raise ScenarioError(file, _line_for(lines, loc), f"at {_loc_text(loc)}: {msg}") from None


def _model_at(loc: Path_) -> type[BaseModel] | None:
    model: type[BaseModel] = Scenario
    for p in loc:
        if isinstance(p, int):
            continue
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == p), None)
        if field is None:
            return None
        ann = field.annotation
        found = _first_model(ann)
        if found is None:
            return None
        model = found
    return model


def _first_model(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()):
        m = _first_model(arg)
        if m is not None:
            return m
    return None


def resolve_audio(ref: str, base: Path) -> Path:
    """A step's audio: a committed fixture name, or a file relative to the scenario."""
    try:
        return find_fixture(ref).path
    except FixtureNotFound as exc:
        p = (base / ref).resolve()
        if p.is_file():
            return p
        raise FileNotFoundError(exc.args[0] if exc.args else ref) from None


def _check_fixtures(scenario: Scenario, file: Path, lines: dict[Path_, int]) -> None:
    for ci, call in enumerate(scenario.calls):
        for si, step in enumerate(call.steps):
            for key in ("say", "barge_in"):
                ref = getattr(step, key)
                if ref is None:
                    continue
                try:
                    resolve_audio(ref, file.parent)
                except FileNotFoundError as exc:
                    loc: Path_ = ("calls", ci, "steps", si, key)
                    raise ScenarioError(
                        file, _line_for(lines, loc), f"at {_loc_text(loc)}: no fixture or audio file {ref!r}; {exc}"
                    ) from None
    played = {Path(ref).stem for call in scenario.calls for step in call.steps for ref in (step.say, step.barge_in)
              if ref is not None}
    for ti, turn in enumerate(scenario.mock.script.turns):
        if turn.match_clip is not None and turn.match_clip not in played:
            try:
                find_fixture(turn.match_clip)
            except FixtureNotFound:
                loc = ("mock", "script", "turns", ti, "match_clip")
                raise ScenarioError(file, _line_for(lines, loc), f"at {_loc_text(loc)}: no fixture and no clip this "
                                    f"scenario plays {turn.match_clip!r} (a clip's name is its file stem)") from None
        if turn.audio is not None:
            try:
                turn.audio = str(resolve_audio(turn.audio, file.parent))  # the mock gets an absolute path
            except FileNotFoundError as exc:
                loc = ("mock", "script", "turns", ti, "audio")
                raise ScenarioError(
                    file, _line_for(lines, loc), f"at {_loc_text(loc)}: no fixture or audio file {turn.audio!r}; {exc}"
                ) from None
