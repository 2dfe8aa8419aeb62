"""The model names of today and their retirement: data, and the one question a session asks of a name.

Rules:

1. Names come from the installed ``openai`` SDK's ``Literal`` types (the ``model`` fields of
   ``RealtimeSessionCreateRequest``, ``AudioTranscription`` and the Live ``SessionConfig``), so a newer
   SDK's new models count without a change here, and from this module's tables (an older SDK lacks
   names the defaults use; the shutdown dates are only in the SDK's docstrings).
2. A name on a shutdown table (:data:`RETIREMENTS`) is *retiring* up to and including its announced
   shutdown date (``days_left`` 0 on the day) and *retired* from the day after. The table wins over
   the SDK's list: a newer SDK that drops the name still finds it retired.
3. A name the SDK lists without a shutdown note whose status nobody has settled (the preview
   snapshots, :data:`UNSETTLED`) is *unlisted*, never *current*; so is a name the SDK does not know
   (an Azure deployment, a newer snapshot). Any non-empty name is accepted: only a policy refuses.
4. *Current*: a name the SDK (or a default here) lists for its family, on no other table.
5. Refusing is a policy (:class:`RetiredModelPolicy`): by default nothing is refused, only journaled
   (a test suite or an example that names a retiring model must not start failing on a calendar date);
   the ``model_retired`` fault refuses every *listed* (retiring or retired) one (``when: listed``, its
   default) or only retired ones (``after_shutdown``, what the real service does past a shutdown). A
   retiring or retired model is always journaled.
6. The refusal's error is configurable (the fault's parameters), and so is the day the dates are judged
   on (``today``, to rehearse a shutdown; by default the real day). The default error, HTTP 404
   ``invalid_request_error`` / ``model_not_found`` "The model `x` does not exist or you do not have
   access to it.", is what earlier retirements answered by third parties' accounts; the real answer
   after these shutdowns is not documented.
7. Days are counted on the UTC calendar (the announcements give a date, not a time zone).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args, get_origin

from . import journal_entries as je
from .faults import FAULTS, Fault

Family = Literal["realtime", "live", "transcription"]
State = Literal["current", "retiring", "retired", "unlisted"]
Where = Literal["session", "transcription"]  # the session's own model, or its input transcription model
RefuseWhen = Literal["never", "after_shutdown", "listed"]  # the fault takes the last two

DEFAULT_REALTIME: Final = "gpt-realtime-2.1"
DEFAULT_LIVE: Final = "gpt-live-1.1"
DEFAULT_TRANSCRIPTION: Final = "gpt-live-transcribe"  # the streaming successor the retirement notes point to
DEFAULTS: Final[Mapping[Family, str]] = {
    "realtime": DEFAULT_REALTIME, "live": DEFAULT_LIVE, "transcription": DEFAULT_TRANSCRIPTION,
}


@dataclass(frozen=True)
class Retirement:
    """An announced shutdown: the last day a model serves, what to move to, and where it is announced."""

    family: Family
    shutdown: dt.date
    replacement: str | None  # None: no replacement is named
    basis: str  # the SDK file whose docstring announces the date


# The SDK announces these dates only in docstrings:
# openai/types/realtime/call_accept_params.py (and realtime_session_create_request.py), the `model` field:
#   "Deprecated values: ... Announced shutdown date: 2027-01-20."
# openai/types/realtime/audio_transcription.py, the `model` field: "... Announced shutdown date: 2027-02-26."
# The docstrings name no replacement (they point to the deprecations page). The ones below are the current
# model of the same kind: gpt-realtime -> gpt-realtime-2.1, the mini -> gpt-realtime-2.1-mini, the
# transcribers -> the streaming gpt-live-transcribe (gpt-transcribe for files); gpt-audio-mini has none.
_REALTIME_DOC: Final = "openai/types/realtime/call_accept_params.py"
_TRANSCRIPTION_DOC: Final = "openai/types/realtime/audio_transcription.py"
_SHUTDOWNS: Final[tuple[tuple[Family, dt.date, str | None, str, tuple[str, ...]], ...]] = (
    ("realtime", dt.date(2027, 1, 20), "gpt-realtime-2.1", _REALTIME_DOC,
     ("gpt-realtime", "gpt-realtime-2025-08-28")),
    ("realtime", dt.date(2027, 1, 20), "gpt-realtime-2.1-mini", _REALTIME_DOC,
     ("gpt-realtime-mini", "gpt-realtime-mini-2025-12-15")),
    ("realtime", dt.date(2027, 1, 20), None, _REALTIME_DOC,
     ("gpt-audio-mini", "gpt-audio-mini-2025-12-15")),
    ("transcription", dt.date(2027, 2, 26), "gpt-live-transcribe", _TRANSCRIPTION_DOC,
     ("whisper-1", "gpt-4o-mini-transcribe", "gpt-4o-mini-transcribe-2025-12-15", "gpt-4o-transcribe",
      "gpt-4o-transcribe-diarize")),
)

RETIREMENTS: Final[Mapping[str, Retirement]] = {
    name: Retirement(family, shutdown, replacement, basis)
    for family, shutdown, replacement, basis, names in _SHUTDOWNS for name in names
}
"""Every model with an announced shutdown, by name."""

UNSETTLED: Final[Mapping[str, Family]] = {
    name: "realtime" for name in (
        "gpt-4o-realtime-preview", "gpt-4o-realtime-preview-2024-10-01", "gpt-4o-realtime-preview-2024-12-17",
        "gpt-4o-realtime-preview-2025-06-03", "gpt-4o-mini-realtime-preview",
        "gpt-4o-mini-realtime-preview-2024-12-17", "gpt-realtime-mini-2025-10-06", "gpt-audio-mini-2025-10-06",
    )
}
"""Names the SDK still lists with no shutdown note whose status is not settled: never called current."""


def literal_names(annotation: Any) -> frozenset[str]:
    """Every string of every ``Literal`` inside a type (through ``Union``, ``Optional``, ``Required``...)."""
    if get_origin(annotation) is Literal:
        return frozenset(a for a in get_args(annotation) if isinstance(a, str))
    out: frozenset[str] = frozenset()
    for arg in get_args(annotation):
        out |= literal_names(arg)
    return out


def _sdk_names(module: str, model: str) -> frozenset[str]:
    """The model names a pydantic model of the SDK types its ``model`` field with (none if this SDK lacks it)."""
    import importlib

    try:
        cls = getattr(importlib.import_module(module), model)
    except (ImportError, AttributeError):  # an older SDK (openai<3.5x has no openai.types.live)
        return frozenset()
    return literal_names(cls.model_fields["model"].annotation)


SDK_NAMES: Final[Mapping[Family, frozenset[str]]] = {
    "realtime": _sdk_names("openai.types.realtime.realtime_session_create_request", "RealtimeSessionCreateRequest"),
    "live": _sdk_names("openai.types.live.session_config", "SessionConfig"),
    "transcription": _sdk_names("openai.types.realtime.audio_transcription", "AudioTranscription"),
}
"""What the installed SDK lists, per family."""


def _current(family: Family) -> tuple[str, ...]:
    names = SDK_NAMES[family] | {DEFAULTS[family]}
    return tuple(sorted(n for n in names if n not in RETIREMENTS and n not in UNSETTLED))


CURRENT: Final[Mapping[Family, tuple[str, ...]]] = {f: _current(f) for f in ("realtime", "live", "transcription")}
"""The current models of each family: listed, on no shutdown table, status settled."""

_FAMILY_OF: Final[Mapping[str, Family]] = {
    **{name: family for family, names in CURRENT.items() for name in names},
    **UNSETTLED,
    **{name: r.family for name, r in RETIREMENTS.items()},
}


# ---- the question -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelStatus:
    """What a model name is on a given day."""

    model: str
    state: State
    family: Family | None  # None: a name neither the SDK nor this module knows
    retirement: Retirement | None = None
    days_left: int | None = None  # to the shutdown: 0 on the day, negative once retired

    @property
    def listed(self) -> bool:
        """On a shutdown table: retiring or retired."""
        return self.retirement is not None


def status(model: str, today: dt.date) -> ModelStatus:
    """Whether ``model`` is current, retiring (its date, replacement, days left) or retired on ``today``."""
    family = _FAMILY_OF.get(model)
    retirement = RETIREMENTS.get(model)
    if retirement is not None:
        left = (retirement.shutdown - today).days
        return ModelStatus(model, "retiring" if left >= 0 else "retired", family, retirement, left)
    if family is None or model in UNSETTLED:
        return ModelStatus(model, "unlisted", family)
    return ModelStatus(model, "current", family)


def today_utc(wall_s: float | None = None) -> dt.date:
    """The UTC day of ``wall_s`` (unix seconds; now when None): the day the checks count from (rule 7).
    A session core passes its injected wall clock, so a replayed session judges the same day."""
    moment = dt.datetime.now(dt.UTC) if wall_s is None else dt.datetime.fromtimestamp(wall_s, dt.UTC)
    return moment.date()


def advice(model: str, shutdown: str, replacement: str | None, retired: bool, where: str = "session") -> str:
    """The one line people read: "gpt-realtime retires on 2027-01-20: move to gpt-realtime-2.1"."""
    what = model if where == "session" else f"{model} (input transcription model)"
    verb = "retired on" if retired else "retires on"
    move = f"move to {replacement}" if replacement else "no replacement is named"
    return f"{what} {verb} {shutdown}: {move}"


# ---- refusing: the policy and its error -----------------------------------------------------------------

_DEFAULTS = FAULTS["model_retired"].params


@dataclass(frozen=True)
class RetiredModelError:
    """The answer to a refused model (rule 6); ``{model}`` in ``message`` is the name."""

    status: int = _DEFAULTS["status"]
    type: str = _DEFAULTS["type"]
    code: str | None = _DEFAULTS["code"]
    message: str = _DEFAULTS["message"]

    def message_for(self, model: str) -> str:
        return self.message.replace("{model}", model)

    def error(self, model: str) -> dict[str, Any]:
        """The ``error`` object of the REST envelope and of the WebSocket ``error`` event (``param`` null,
        as the real model_not_found answers have it)."""
        return {"message": self.message_for(model), "type": self.type, "param": None, "code": self.code}

    def envelope(self, model: str) -> dict[str, Any]:
        """The REST body, sent with :attr:`status`."""
        return {"error": self.error(model)}


@dataclass(frozen=True)
class RetiredModelPolicy:
    """Which listed models are refused, and how (rule 5)."""

    refuse: RefuseWhen = "never"
    error: RetiredModelError = field(default_factory=RetiredModelError)
    today: dt.date | None = None  # judge the dates as of this day instead of the real one (rehearsing a shutdown)

    @classmethod
    def of(cls, faults: Iterable[Fault], otherwise: RefuseWhen = "never") -> RetiredModelPolicy:
        """The first ``model_retired`` fault's policy, else ``otherwise`` with the default error."""
        fault = next((f for f in faults if f.name == "model_retired"), None)
        if fault is None:
            return cls(refuse=otherwise)
        day = str(fault.param("today"))
        return cls(refuse=fault.param("when"), error=RetiredModelError(
            status=int(fault.param("status")), type=str(fault.param("type")),
            code=None if fault.param("code") is None else str(fault.param("code")),
            message=str(fault.param("message"))), today=dt.date.fromisoformat(day) if day else None)

    def refuses(self, found: ModelStatus) -> bool:
        if self.refuse == "listed":
            return found.listed
        return self.refuse == "after_shutdown" and found.state == "retired"


@dataclass(frozen=True)
class ModelCheck:
    """One named model judged: what it is, whether the session is refused for it, what to journal."""

    status: ModelStatus
    where: Where
    refusal: RetiredModelError | None  # None: serve it
    entry: je.ModelRetiring | None  # None: nothing to warn about (current or unlisted)


def check(model: str, where: Where, today: dt.date, policy: RetiredModelPolicy,
          via: str | None = None) -> ModelCheck:
    """Judge one model a session names on ``today`` (or the policy's own day), ``via`` the request that named
    it (accept, session.update...)."""
    found = status(model, policy.today or today)
    refused = policy.refuses(found)
    r = found.retirement
    entry = None if r is None or found.days_left is None else je.ModelRetiring(
        model=model, where=where, shutdown=r.shutdown.isoformat(), replacement=r.replacement,
        days_left=found.days_left, refused=refused, via=je.ABSENT if via is None else via)
    return ModelCheck(found, where, policy.error if refused else None, entry)


def named_models(session: Mapping[str, Any]) -> list[tuple[Where, str]]:
    """The models a session config names (an accept body, ``session.update``'s session, a Live config):
    its own ``model`` and ``audio.input.transcription.model``, when they are non-empty strings."""
    out: list[tuple[Where, str]] = []
    model = session.get("model")
    if isinstance(model, str) and model:
        out.append(("session", model))
    audio = session.get("audio")
    audio_in = audio.get("input") if isinstance(audio, dict) else None
    transcription = audio_in.get("transcription") if isinstance(audio_in, dict) else None
    asr = transcription.get("model") if isinstance(transcription, dict) else None
    if isinstance(asr, str) and asr:
        out.append(("transcription", asr))
    return out


def check_session(session: Mapping[str, Any], today: dt.date, policy: RetiredModelPolicy,
                  via: str | None = None) -> list[ModelCheck]:
    """Every model a session config names, judged; the first with a refusal decides the answer."""
    return [check(model, where, today, policy, via) for where, model in named_models(session)]


def first_refusal(checks: Iterable[ModelCheck]) -> ModelCheck | None:
    return next((c for c in checks if c.refusal is not None), None)
