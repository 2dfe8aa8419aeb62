"""Validate client payloads against the official SDK's own types, reporting errors the real way.

Why derived, not hand-kept: the SDK's pydantic models and TypedDict params *are* the GA
schema, so walking them keeps the mock in step with every SDK upgrade (new fields are
accepted, removed beta fields are rejected) without a second list of names to maintain.

The real server checks a payload in three passes, and so do we:

1. ``type`` of the session first (``missing_required_parameter`` / ``invalid_value``);
2. unknown parameters: the first offending path, depth-first in the payload's key order;
3. values: required keys, JSON types, enum members, documented numeric ranges.

What the SDK types cannot say (numeric ranges the docs give in prose) lives in
``_RANGES``, keyed by the SDK class and field it refines.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pydantic
import typing_extensions
from openai._utils import PropertyInfo
from openai.types.realtime import (
    RealtimeSessionCreateRequest,
    RealtimeTranscriptionSessionCreateRequest,
)

__all__ = [
    "ParamError",
    "json_type_name",
    "supported_values",
    "validate_payload",
    "validate_session_config",
]


@dataclass(frozen=True)
class ParamError:
    """One rejected parameter; maps 1:1 onto the WS ``error`` event and the REST error envelope."""

    code: str
    message: str
    param: str | None

    def to_error(self, event_id: str | None = None) -> dict[str, Any]:
        """The ``error`` object of a WS error event (``type`` is always invalid_request_error)."""
        return {
            "type": "invalid_request_error",
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "event_id": event_id,
        }


# ---- messages, worded as the real service words them ----------------------------------


def supported_values(values: Sequence[Any]) -> str:
    """``'a'``, ``'a' and 'b'``, ``'a', 'b', and 'c'`` — the service's list style."""
    quoted = [f"'{v}'" for v in values]
    if len(quoted) == 1:
        return quoted[0]
    if len(quoted) == 2:
        return f"{quoted[0]} and {quoted[1]}"
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}"


def json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "an unsupported value"


def _missing(path: str) -> ParamError:
    return ParamError("missing_required_parameter", f"Missing required parameter: '{path}'.", path)


def _unknown(path: str) -> ParamError:
    return ParamError("unknown_parameter", f"Unknown parameter: '{path}'.", path)


def _invalid_value(path: str, value: Any, allowed: Sequence[Any]) -> ParamError:
    return ParamError(
        "invalid_value",
        f"Invalid value: '{value}'. Supported values are: {supported_values(allowed)}.",
        path,
    )


def _invalid_type(path: str, expected: list[str], value: Any) -> ParamError:
    names = sorted(set(expected), key=expected.index)
    bare = [n.removeprefix("an ").removeprefix("a ") for n in names]
    want = names[0] if len(names) == 1 else "one of " + " or ".join(bare)
    return ParamError(
        "invalid_type",
        f"Invalid type for '{path}': expected {want}, but got {json_type_name(value)} instead.",
        path,
    )


def _out_of_range(
    path: str, value: float, lo: float | None, hi: float | None, kind: str | None = None
) -> ParamError | None:
    kind = kind or ("integer" if isinstance(value, int) and not isinstance(value, bool) else "decimal")
    if lo is not None and value < lo:
        return ParamError(
            f"{kind}_below_min_value",
            f"Invalid '{path}': {kind} below minimum value. Expected a value >= {lo}, but got {value} instead.",
            path,
        )
    if hi is not None and value > hi:
        return ParamError(
            f"{kind}_above_max_value",
            f"Invalid '{path}': {kind} above maximum value. Expected a value <= {hi}, but got {value} instead.",
            path,
        )
    return None


# Documented ranges the SDK types leave as plain int/float.
# Keyed by (SDK class name, field name) so the same rule covers the model and the TypedDict.
_RANGES: dict[tuple[str, str], tuple[float | None, float | None]] = {
    ("RealtimeSessionCreateRequest", "max_output_tokens"): (1, 4096),
    ("RealtimeSessionCreateRequestParam", "max_output_tokens"): (1, 4096),
    ("RealtimeResponseCreateParams", "max_output_tokens"): (1, 4096),
    ("RealtimeResponseCreateParamsParam", "max_output_tokens"): (1, 4096),
    ("RealtimeResponseCreateParamsWithReferencesParam", "max_output_tokens"): (1, 4096),
    ("RealtimeAudioConfigOutput", "speed"): (0.25, 1.5),
    ("RealtimeAudioConfigOutputParam", "speed"): (0.25, 1.5),
    ("ServerVad", "threshold"): (0.0, 1.0),
    ("ServerVad", "prefix_padding_ms"): (0, None),
    ("ServerVad", "silence_duration_ms"): (0, None),
    ("ServerVad", "idle_timeout_ms"): (5000, 30000),
    ("NoiseReduction", "strength"): (0.0, None),
    ("RealtimeTruncationRetentionRatio", "retention_ratio"): (0.0, 1.0),
    ("RealtimeTruncationRetentionRatioParam", "retention_ratio"): (0.0, 1.0),
}


# ---- type introspection ----------------------------------------------------------------

_NONE = type(None)
_R = typing.TypeVar("_R")


def _per_type(fn: typing.Callable[[Any], _R]) -> typing.Callable[[Any], _R]:
    """Memoise a pure function of an SDK type (the types are static; introspection is the hot path).

    Callers must not mutate what it returns. Keyed by identity (hashing a typing Union walks
    its arguments every time); the entry holds the type itself so its id cannot be reused.
    """
    cache: dict[int, tuple[Any, _R]] = {}

    def wrapper(tp: Any) -> _R:
        hit = cache.get(id(tp))
        if hit is not None and hit[0] is tp:
            return hit[1]
        result = fn(tp)
        cache[id(tp)] = (tp, result)
        return result

    wrapper.__doc__ = fn.__doc__
    return wrapper


@dataclass(frozen=True)
class _Field:
    name: str  # wire name (alias)
    annotation: Any
    required: bool


@_per_type
def _strip(tp: Any) -> tuple[Any, bool]:
    """Remove Annotated/Required/NotRequired wrappers; report whether Required was present."""
    required = False
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Required, typing_extensions.Required):
            required = True
            tp = typing.get_args(tp)[0]
        elif origin in (typing.NotRequired, typing_extensions.NotRequired):
            tp = typing.get_args(tp)[0]
        else:
            return tp, required


def _alias(tp: Any) -> str | None:
    if typing.get_origin(tp) is typing.Annotated:
        for meta in typing.get_args(tp)[1:]:
            if isinstance(meta, PropertyInfo) and meta.alias:
                return meta.alias
    return None


@_per_type
def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and (issubclass(tp, pydantic.BaseModel) or typing_extensions.is_typeddict(tp))


_FIELD_CACHE: dict[Any, dict[str, _Field]] = {}


def _fields(tp: Any) -> dict[str, _Field]:
    """Wire-name → field for a pydantic model or a TypedDict (cached; the SDK types are static)."""
    cached = _FIELD_CACHE.get(tp)
    if cached is not None:
        return cached
    out: dict[str, _Field] = {}
    if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        for name, info in tp.model_fields.items():
            wire = info.alias or name
            out[wire] = _Field(wire, info.annotation, info.is_required())
    else:
        hints = typing_extensions.get_type_hints(tp, include_extras=True)
        required_keys: frozenset[str] = getattr(tp, "__required_keys__", frozenset())
        for name, hint in hints.items():
            wire = _alias(_strip_required_only(hint)) or name
            # the SDK's params use postponed annotations, so __required_keys__ is empty:
            # read Required[...] from the resolved hint instead
            out[wire] = _Field(wire, hint, _strip(hint)[1] or name in required_keys)
    _FIELD_CACHE[tp] = out
    return out


def _strip_required_only(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Required, typing_extensions.Required, typing.NotRequired, typing_extensions.NotRequired):
        return typing.get_args(tp)[0]
    return tp


@_per_type
def _members(tp: Any) -> tuple[list[Any], bool]:
    """Flatten a (possibly nested, possibly Annotated) Union into members; report nullability."""
    tp, _ = _strip(tp)
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        out: list[Any] = []
        nullable = False
        for arg in typing.get_args(tp):
            sub, sub_null = _members(arg)
            out.extend(sub)
            nullable = nullable or sub_null
        return out, nullable
    if tp is _NONE or tp is None:
        return [], True
    return [tp], False


@_per_type
def _literal_values(tp: Any) -> list[Any] | None:
    tp, _ = _strip(tp)
    if typing.get_origin(tp) is Literal:
        return list(typing.get_args(tp))
    return None


@_per_type
def _model_literals(model: Any) -> dict[str, list[Any]]:
    """Fields of a model typed as a string Literal (optionally nullable): the union discriminators."""
    out: dict[str, list[Any]] = {}
    for name, f in _fields(model).items():
        members, _ = _members(f.annotation)
        if len(members) == 1:
            values = _literal_values(members[0])
            if values is not None and all(isinstance(v, str) for v in values):
                out[name] = values
    return out


def _pick_model(models: list[Any], value: Mapping[str, Any]) -> Any | None:
    """The union member a dict belongs to: every Literal field present must match.

    Covers the SDK's ``type`` discriminators and the ``type`` + ``role`` pairs of message items.
    """
    matches = []
    for m in models:
        # every discriminator present must be a scalar among the member's values; a member whose
        # required discriminator is absent only matches when nothing else does
        for k, vals in _model_literals(m).items():
            if k in value:
                v = value[k]
                if not _hashable(v) or v not in vals:
                    break
        else:
            matches.append(m)
    if not matches:
        return None
    if len(matches) == 1:
        return matches[0]
    exact = [m for m in matches if all(k in value for k, f in _fields(m).items() if f.required)]
    fitting = [m for m in (exact or matches) if set(value) <= set(_fields(m))]
    return (fitting or exact or matches)[0]


def _hashable(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool)) or v is None


def _sequence_item(tp: Any) -> Any | None:
    """Element type of List[X] / Sequence[X] / Iterable[X] (TypedDict params use Iterable)."""
    if tp is list:
        return Any
    if typing.get_origin(tp) in (list, tuple, Sequence, Iterable):
        args = typing.get_args(tp)
        return args[0] if args else Any
    return None


def _mapping_value(tp: Any) -> Any | None:
    if typing.get_origin(tp) in (dict, Mapping):
        args = typing.get_args(tp)
        return args[1] if len(args) == 2 else Any
    if tp is dict:
        return Any
    return None


# ---- pass 2: unknown parameters --------------------------------------------------------


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _find_unknown(tp: Any, value: Any, path: str) -> ParamError | None:
    """First unknown key, depth-first in the payload's own key order."""
    members, _ = _members(tp)
    if value is None:
        return None
    if isinstance(value, dict):
        models = [m for m in members if _is_model(m)]
        if models:
            model = _pick_model(models, value)
            known: dict[str, _Field]
            if model is None:  # unknown discriminator: accept any member's keys here, pass 3 reports it
                known = {}
                for m in models:
                    known.update(_fields(m))
            else:
                known = _fields(model)
            for key, sub in value.items():
                f = known.get(key)
                if f is None:
                    return _unknown(_join(path, key))
                err = _find_unknown(f.annotation, sub, _join(path, key))
                if err:
                    return err
            return None
        for m in members:
            vt = _mapping_value(m)
            if vt is not None:
                for key, sub in value.items():
                    err = _find_unknown(vt, sub, _join(path, str(key)))
                    if err:
                        return err
                return None
        return None
    if isinstance(value, list):
        for m in members:
            it = _sequence_item(m)
            if it is not None:
                for i, sub in enumerate(value):
                    err = _find_unknown(it, sub, _join(path, i))
                    if err:
                        return err
                return None
    return None


# ---- pass 3: values --------------------------------------------------------------------

_SCALARS: dict[Any, tuple[type | tuple[type, ...], str]] = {
    str: (str, "a string"),
    int: (int, "an integer"),
    float: ((int, float), "a number"),
    bool: (bool, "a boolean"),
}


def _check_value(  # noqa: C901  (one branch per kind of type in the SDK's models; splitting scatters one walk)
    tp: Any, value: Any, path: str, owner: str | None = None, field: str | None = None
) -> ParamError | None:
    members, nullable = _members(tp)
    if tp is Any or tp is object or any(m is Any or m is object for m in members):
        return None
    if value is None:
        if nullable or not members:
            return None
        return _invalid_type(path, [_expected(m) for m in members], value)

    expected: list[str] = []
    literal_pool: list[Any] = []
    for m in members:
        lits = _literal_values(m)
        if lits is not None:
            if _hashable(value) and not isinstance(value, bool) and value in lits:
                return None
            if isinstance(value, bool) and any(v is value for v in lits):
                return None
            literal_pool.extend(lits)
            expected.append(_expected(m))
            continue
        if m in _SCALARS:
            pytypes, name = _SCALARS[m]
            expected.append(name)
            if isinstance(value, bool) and m is not bool:
                continue
            if isinstance(value, pytypes):
                return _check_range(owner, field, value, path, "decimal" if m is float else "integer")
            continue
        if _is_model(m):
            expected.append("an object")
            continue
        if _sequence_item(m) is not None:
            expected.append("an array")
            if isinstance(value, list):
                item_tp = _sequence_item(m)
                for i, sub in enumerate(value):
                    err = _check_value(item_tp, sub, _join(path, i))
                    if err:
                        return err
                return None
            continue
        if _mapping_value(m) is not None:
            expected.append("an object")
            if isinstance(value, dict):
                vt = _mapping_value(m)
                for key, sub in value.items():
                    err = _check_value(vt, sub, _join(path, str(key)))
                    if err:
                        return err
                return None
            continue
        expected.append("a value")  # an SDK type this walker does not model: accept

        return None

    models = [m for m in members if _is_model(m)]
    if isinstance(value, dict) and models:
        model = _pick_model(models, value)
        if model is None:
            return _bad_discriminator(models, value, path)
        return _check_object(model, value, path)

    if literal_pool and _same_json_kind(value, literal_pool):
        return _literal_error(path, value, literal_pool)
    return _invalid_type(path, expected, value)


def _same_json_kind(value: Any, pool: list[Any]) -> bool:
    if isinstance(value, bool):
        return any(isinstance(v, bool) for v in pool)
    if isinstance(value, (int, float)):
        return any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pool)
    return isinstance(value, str) and any(isinstance(v, str) for v in pool)


def _literal_error(path: str, value: Any, pool: list[Any]) -> ParamError:
    numbers = [v for v in pool if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool) and len(numbers) == len(pool):
        err = _out_of_range(path, value, min(numbers), max(numbers))
        if err:
            return err
    return _invalid_value(path, value, pool)


def _bad_discriminator(models: list[Any], value: Mapping[str, Any], path: str) -> ParamError:
    keys: dict[str, list[Any]] = {}
    for m in models:
        for k, vals in _model_literals(m).items():
            keys.setdefault(k, [])
            keys[k].extend(v for v in vals if v not in keys[k])
    for k, vals in keys.items():
        if k in value and (not _hashable(value[k]) or value[k] not in vals):
            if not _hashable(value[k]) or not _same_json_kind(value[k], vals):
                return _invalid_type(_join(path, k), ["a string"], value[k])
            return _invalid_value(_join(path, k), value[k], vals)
    first = next(iter(keys), "type")
    return _missing(_join(path, first))


def _check_object(model: Any, value: Mapping[str, Any], path: str) -> ParamError | None:
    fields = _fields(model)
    for name, f in fields.items():
        if f.required and name not in value:
            return _missing(_join(path, name))
    owner = getattr(model, "__name__", None)
    for key, sub in value.items():
        f = fields[key]
        err = _check_value(f.annotation, sub, _join(path, key), owner, key)
        if err:
            return err
    if owner in _OBJECT_RULES:
        return _OBJECT_RULES[owner](value, path)
    return None


def _check_range(owner: str | None, field: str | None, value: Any, path: str, kind: str) -> ParamError | None:
    if owner is None or field is None or isinstance(value, bool):
        return None
    bounds = _RANGES.get((owner, field))
    if bounds is None or not isinstance(value, (int, float)):
        return None
    return _out_of_range(path, value, *bounds, kind=kind)


def _expected(m: Any) -> str:
    if _literal_values(m) is not None:
        vals = _literal_values(m) or []
        return json_type_name(vals[0]) if vals else "a value"
    if m in _SCALARS:
        return _SCALARS[m][1]
    if _sequence_item(m) is not None:
        return "an array"
    return "an object"


# Cross-field rules the types cannot express.
def _modalities_rule(value: Mapping[str, Any], path: str) -> ParamError | None:
    mods = value.get("output_modalities")
    if isinstance(mods, list) and len(mods) > 1:
        shown = "[" + ", ".join(f"'{m}'" for m in mods) + "]"
        return ParamError(
            "invalid_value",
            f"Invalid modalities: {shown}. Supported combinations are: ['text'] and ['audio'].",
            _join(path, "output_modalities"),
        )
    return None


def _metadata_rule(value: Mapping[str, Any], path: str) -> ParamError | None:
    meta = value.get("metadata")
    if isinstance(meta, dict):
        p = _join(path, "metadata")
        if len(meta) > 16:
            return ParamError(
                "object_above_max_properties",
                f"Invalid '{p}': too many properties. Expected an object with at most 16 properties, "
                f"but got an object with {len(meta)} properties instead.",
                p,
            )
        for k, v in meta.items():
            if len(str(k)) > 64:
                return ParamError(
                    "string_above_max_length",
                    f"Invalid '{p}': metadata key too long. Expected a string with maximum length 64, "
                    f"but got a string with length {len(str(k))} instead.",
                    p,
                )
            if isinstance(v, str) and len(v) > 512:
                q = _join(p, str(k))
                return ParamError(
                    "string_above_max_length",
                    f"Invalid '{q}': string too long. Expected a string with maximum length 512, "
                    f"but got a string with length {len(v)} instead.",
                    q,
                )
    return _modalities_rule(value, path)


_OBJECT_RULES: dict[str, Any] = {
    "RealtimeSessionCreateRequest": _modalities_rule,
    "RealtimeResponseCreateParams": _metadata_rule,
    "RealtimeResponseCreateParamsParam": _metadata_rule,
    "RealtimeResponseCreateParamsWithReferencesParam": _metadata_rule,
}


# ---- entry points ----------------------------------------------------------------------


def validate_payload(tp: Any, payload: Any, prefix: str) -> ParamError | None:
    """Validate ``payload`` against an SDK type (model, TypedDict or union): unknown keys, then values."""
    if not isinstance(payload, dict):
        members, _ = _members(tp)
        if payload is None or not any(_is_model(m) for m in members):
            return _check_value(tp, payload, prefix)
        return _invalid_type(prefix, ["an object"], payload)
    return _find_unknown(tp, payload, prefix) or _check_value(tp, payload, prefix)


_SESSION_TYPES: dict[str, type[pydantic.BaseModel]] = {
    "realtime": RealtimeSessionCreateRequest,
    "transcription": RealtimeTranscriptionSessionCreateRequest,
}


def validate_session_config(
    payload: Any,
    *,
    prefix: str = "session",
    kind: Literal["any", "realtime", "transcription"] = "any",
) -> ParamError | None:
    """Check an accept body / ``session.update`` session / client_secrets session.

    ``kind`` is the type of the session being updated: a transcription-typed update sent to
    a realtime session (and vice versa) is refused the way the service refuses it.
    Returns ``None`` when the payload is acceptable.
    """
    if not isinstance(payload, dict):
        return _invalid_type(prefix, ["an object"], payload)
    tpath = _join(prefix, "type")
    if "type" not in payload:
        return _missing(tpath)
    stype = payload["type"]
    if not isinstance(stype, str):
        return _invalid_type(tpath, ["a string"], stype)
    if stype not in _SESSION_TYPES:
        return _invalid_value(tpath, stype, list(_SESSION_TYPES))
    if kind != "any" and stype != kind:
        return ParamError(
            "invalid_value",
            f"Passing a {stype} session update event to a {kind} session is not allowed.",
            tpath,
        )
    model = _SESSION_TYPES[stype]
    err = _find_unknown(model, payload, prefix) or _check_value(model, payload, prefix)
    if err:
        return err
    return _final_check(model, payload, prefix)


def _final_check(model: type[pydantic.BaseModel], payload: dict[str, Any], prefix: str) -> ParamError | None:
    """Belt and braces: the SDK model itself must accept what the walk accepted."""
    try:
        model.model_validate(payload)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        loc = [p for p in first["loc"] if isinstance(p, int) or p in _all_field_names()]
        path = prefix
        for p in loc:
            path = _join(path, p)
        return ParamError("invalid_value", f"Invalid value for '{path}': {first['msg']}.", path)
    return None


_NAMES: set[str] = set()


def _all_field_names() -> set[str]:
    if not _NAMES:
        for tp in list(_FIELD_CACHE):
            _NAMES.update(_FIELD_CACHE[tp])
    return _NAMES
