"""REST neighbours of the Realtime API: ephemeral client secrets and whisper-style transcription.

``POST /v1/realtime/client_secrets`` validates its session like ``session.update`` does, but
answers errors as a 400 REST envelope (``Unknown parameter: 'session.temperature'.``).
``POST /v1/audio/transcriptions`` is the multipart endpoint the forum thread fell back on; it
returns the behaviour script's first turn, honouring the ``language`` and ``prompt`` form fields
the way realtime input transcription does (:mod:`mock_api.realtime.transcription`).
"""

from __future__ import annotations

import io
import time
import wave
from typing import Any

from aiohttp import web

from . import errors, ids, rest_io, wire_json
from . import journal_entries as je
from .realtime.script import Script
from .realtime.session import _merge_session as merge_session
from .realtime.session import default_session
from .realtime.transcription import primary, transcribe
from .realtime.validation import ParamError, validate_session_config
from .server import SERVER_KEY, MockServer

PREFIXES = ("/v1", "/openai/v1")
SECRET_PREFIXES = (*PREFIXES, "/openai")  # AzureOpenAI: /openai/realtime/client_secrets?api-version=...
_LANGUAGE_NAMES = {"en": "english", "es": "spanish", "fr": "french", "de": "german", "it": "italian",
                   "pt": "portuguese", "nl": "dutch", "ja": "japanese", "zh": "chinese", "ko": "korean"}


def _param_error(err: ParamError) -> web.Response:
    return errors.rest_error(400, err.message, code=err.code, param=err.param)


async def client_secrets(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    denied = server.admit(request)
    if denied is not None:
        return denied
    try:
        body: Any = await rest_io.read_json(request, server)  # whole, ≤ max_body_bytes, strict JSON
    except rest_io.BadRequest as exc:
        return exc.response
    if not isinstance(body, dict):
        return errors.rest_error(400, "Invalid type for body: expected an object.", code="invalid_type")
    for key in body:
        if key not in ("expires_after", "session"):
            return _param_error(ParamError("unknown_parameter", f"Unknown parameter: '{key}'.", key))
    seconds = 600
    exp = body.get("expires_after")
    if exp is not None:
        if not isinstance(exp, dict):
            return _param_error(ParamError("invalid_type", "Invalid type for 'expires_after': expected an object, "
                                           "but got something else instead.", "expires_after"))
        for key in exp:
            if key not in ("anchor", "seconds"):
                return _param_error(ParamError("unknown_parameter", f"Unknown parameter: 'expires_after.{key}'.",
                                               f"expires_after.{key}"))
        if exp.get("anchor", "created_at") != "created_at":
            return _param_error(ParamError("invalid_value", f"Invalid value: '{exp['anchor']}'. Supported values "
                                           "are: 'created_at'.", "expires_after.anchor"))
        s = exp.get("seconds", 600)
        if not isinstance(s, int) or isinstance(s, bool) or not 10 <= s <= 7200:
            return _param_error(ParamError(
                "integer_below_min_value" if isinstance(s, int) and s < 10 else "integer_above_max_value",
                f"Invalid 'expires_after.seconds': expected an integer between 10 and 7200, but got {s} instead.",
                "expires_after.seconds"))
        seconds = s
    session = body.get("session", {"type": "realtime"})
    err = validate_session_config(session)
    if err:
        return _param_error(err)
    now = time.time()
    kind = session["type"]
    effective = merge_session(default_session(kind, session.get("model"), "audio/pcm", now),
                              {k: v for k, v in session.items() if k != "type"})
    if session.get("model"):
        effective["model"] = session["model"]
    expires_at = int(now) + seconds
    key = ids.ephemeral_key()
    server.mint_ephemeral(key, expires_at)  # accepted on the Realtime socket until then
    server.journal.add(None, je.RestClientSecret(session_type=kind, expires_at=expires_at, key=errors.masked(key)))
    return web.json_response({"value": key, "expires_at": expires_at, "session": effective},
                             dumps=wire_json.dumps)


def _wav_seconds(data: bytes) -> float | None:
    try:
        with wave.open(io.BytesIO(data)) as w:
            return w.getnframes() / float(w.getframerate())
    except (wave.Error, EOFError):
        return None


async def transcriptions(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    denied = server.authenticate(request)
    if denied is not None:
        return denied
    if not request.content_type.startswith("multipart/"):
        return errors.rest_error(400, "Invalid Content-Type header (application/json), expected multipart/form-data."
                                 if request.content_type == "application/json" else
                                 f"Invalid Content-Type header ({request.content_type}), expected "
                                 "multipart/form-data.", code=None)
    form = await request.post()
    file = form.get("file")
    model = form.get("model")
    if not model:
        return errors.rest_error(400, "you must provide a model parameter", code=None, param=None)
    if file is None or isinstance(file, str):
        return errors.rest_error(400, "Missing required parameter: 'file'.", code="missing_required_parameter",
                                 param="file")
    data = bytes(file) if isinstance(file, (bytes, bytearray)) else file.file.read()
    script = Script.load(server.script_for(None))
    turn = script.turn(0)
    heard = transcribe(turn.hears if turn.hears is not None else script.default_hears, turn.language,
                       {"model": str(model), "language": form.get("language"), "prompt": form.get("prompt")})
    text = heard.text
    detected = turn.language if heard.recognised else str(form.get("language"))
    seconds = _wav_seconds(data)
    if seconds is None:
        seconds = round(len(data) / 16000.0, 3)  # unknown container: assume ~128 kbit/s
    fmt = str(form.get("response_format") or "json")
    server.journal.add(None, je.RestTranscription(model=str(model), bytes=len(data), response_format=fmt))
    if fmt == "text":
        return web.Response(text=text + "\n", content_type="text/plain")
    usage: dict[str, Any]
    if str(model) == "whisper-1":
        usage = {"type": "duration", "seconds": max(1, round(seconds))}
    else:
        audio_tokens = max(1, round(seconds * 10))
        out = max(1, len(text) // 4)
        usage = {"type": "tokens", "input_tokens": audio_tokens, "output_tokens": out,
                 "total_tokens": audio_tokens + out,
                 "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens}}
    if fmt == "verbose_json":
        language = _LANGUAGE_NAMES.get(primary(detected) or "", detected)
        return web.json_response({"task": "transcribe", "language": language,
                                  "duration": seconds, "text": text,
                                  "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": seconds, "text": text,
                                                "tokens": [], "temperature": 0.0, "avg_logprob": -0.1,
                                                "compression_ratio": 1.0, "no_speech_prob": 0.01}],
                                  "usage": usage})
    return web.json_response({"text": text, "usage": usage})


def setup(app: web.Application, server: MockServer) -> None:
    """Add the REST endpoints beside the call controls (create_app has stored ``server`` under SERVER_KEY)."""
    for prefix in SECRET_PREFIXES:
        app.router.add_post(prefix + "/realtime/client_secrets", client_secrets)
    for prefix in PREFIXES:  # AzureOpenAI sends transcriptions to /openai/deployments/<name>/...: a stub's job
        app.router.add_post(prefix + "/audio/transcriptions", transcriptions)
