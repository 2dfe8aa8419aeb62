"""GPT-Live's call controls, ``/v1/live/sessions/{session_id}/accept|reject|refer|hangup``, and a stored
session's recording, ``GET /v1/live/sessions/{session_id}/content``.

The same call as ``/v1/realtime/calls/{call_id}/…`` under its ``live_`` id: the front matter (reading the body,
auth, rate limits, unknown ids, the journal) is :func:`mock_api.http.live_control`'s, the call table decides.
What differs is what a body must be, read from the SDK's Live parameter types:

- accept: ``{"session": {"type": "live", "model": …, …}}``; unknown keys (``audio.format`` too: SIP negotiates
  the media format) and wrong types are 400 ``unknown_parameter``/``invalid_type`` naming the parameter; a blank
  model is ``invalid_value``. A refused body is answered as a refused Realtime accept is (``strict_accept``: 400,
  else 200 and the SIP leg fails), as the real service's answer to it is undocumented;
- reject: ``status_code`` is required, a SIP final status from 300 to 699 (a 3xx redirects the caller);
- refer: a nonblank ``target_uri`` that is a SIP or tel URI;
- hangup: no body.

The recording (:func:`content`; its format and the answer for an unstored session are undocumented, so both
are :class:`~mock_api.live_host.RecordingSettings`):

- the key first (Azure's front door on Azure paths), as every call control;
- a session started with ``store: true`` (accepted call or primary WebSocket), running or ended, while the
  registry keeps it: 200, ``Content-Type: audio/wav``, 16-bit mono 24 kHz, caller and model mixed on the
  session timeline from 0 to its end (so far), at most ``max_seconds``;
- one started without it: ``unstored_status`` (400 by default) ``session_not_stored``;
- any other id (unknown, never started, its answer no longer kept): 404 ``session_not_found``.
Every answer is journaled (``live.content``) on the session's timeline when it has one.

``POST /v1/live/sessions/{session_id}/fork`` (:func:`fork`; the SDK types it for WebRTC only, which rtsip does
not emulate; a WebSocket fork is :mod:`mock_api.live_ws`'s): the key first; the session must be known (404
``session_not_found``) and stored (the recording's ``unstored_status`` / ``unstored_code``); the body must be
the SDK's ``SessionForkParams`` (400 naming the parameter); a valid body is then answered as a WebRTC create
is (``live_outbound.webrtc_status`` / ``webrtc_code``, 400 ``unsupported_transport``), never with a fake SDP.
Every answer is journaled (``live.refused``) on the forked session's timeline when it has one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from openai.types.live.session_accept_params import SessionAcceptParams
from openai.types.live.session_fork_params import SessionForkParams
from openai.types.live.session_refer_params import SessionReferParams
from openai.types.live.session_reject_params import SessionRejectParams

from . import calls as c
from . import errors, live_host, rest_io
from . import journal_entries as je
from .core_runner import core_pool
from .realtime.validation import ParamError, validate_payload
from .rest_io import Op, bad_refer_target, outcome_response, param_error, referable
from .server import SERVER_KEY, MockServer

BIG_WAV_BYTES = 1024 * 1024  # a longer recording is mixed on a worker thread


def accept_problem(body: dict[str, Any]) -> ParamError | None:
    """Why a Live accept body is refused, or None: the SDK's ``SessionAcceptParams``, then a nonblank model."""
    problem = validate_payload(SessionAcceptParams, body, "")
    if problem is not None:
        return problem
    if not str(body["session"]["model"]).strip():
        return ParamError("invalid_value", "Invalid 'session.model': expected a non-empty string.", "session.model")
    return None


def _accept(server: MockServer, call: c.Call, body: dict[str, Any], azure: bool) -> web.Response:
    problem = accept_problem(body)
    return outcome_response(server.apply(call, c.Accept(
        body, None if problem is None else c.BodyProblem(problem.code, problem.message, problem.param),
        strict=server.config.strict_accept, faults=server.fault_script(call.call_id), surface="live",
        loser_status=server.config.loser_status)))


def _reject(server: MockServer, call: c.Call, body: dict[str, Any], azure: bool) -> web.Response:
    problem = validate_payload(SessionRejectParams, body, "")  # status_code is Required here
    if problem is not None:
        return param_error(problem)
    code = body["status_code"]
    if isinstance(code, bool) or not 300 <= code <= 699:
        return errors.rest_error(400, f"Invalid 'status_code': {code}. Expected a SIP status between 300 and 699.",
                                 code="invalid_value", param="status_code")
    return outcome_response(server.apply(call, c.Reject(code, surface="live",
                                                        loser_status=server.config.loser_status)))


def _refer(server: MockServer, call: c.Call, body: dict[str, Any], azure: bool) -> web.Response:
    problem = validate_payload(SessionReferParams, body, "")
    if problem is not None:
        return param_error(problem)
    target = body["target_uri"]
    if not target.strip():
        return errors.rest_error(400, "Invalid 'target_uri': expected a nonblank URI.", code="invalid_value",
                                 param="target_uri")
    if not referable(target):
        return bad_refer_target()
    return outcome_response(server.apply(call, c.Refer(target, faults=server.fault_script(call.call_id),
                                                       surface="live", loser_status=server.config.loser_status)))


def _hangup(server: MockServer, call: c.Call, body: dict[str, Any], azure: bool) -> web.Response:
    return outcome_response(server.apply(call, c.Hangup(surface="live", loser_status=server.config.loser_status)))


OPS: dict[str, Op] = {"accept": _accept, "reject": _reject, "refer": _refer, "hangup": _hangup}


async def content(request: web.Request) -> web.Response:
    """``GET /v1/live/sessions/{session_id}/content``: a stored session's recording as a WAV."""
    server: MockServer = request.app[SERVER_KEY]
    session_id = request.match_info["session_id"]
    call = server.call_on("live", session_id)
    host = live_host.find_session(server, session_id)
    jid = call.call_id if call is not None else host.key if host is not None else (
        session_id if server.journal.timeline(session_id) is not None else None)

    def answer(resp: web.Response, **fields: Any) -> web.Response:
        code = fields.pop("code", je.ABSENT)
        server.journal.add(jid, je.LiveContent(session_id=session_id, status=resp.status, code=code, **fields))
        return resp

    denied = server.admit(request)
    if denied is not None:
        return answer(denied, code="unauthorized")
    reg = live_host.registry(server)
    if session_id not in reg.recordings:
        refusal = c.not_found("live")
        return answer(errors.rest_error(refusal.http_status, refusal.message, code=refusal.code), code=refusal.code)
    rec = reg.recordings[session_id]
    if rec is None:
        limits = reg.recording
        return answer(errors.rest_error(
            limits.unstored_status, f"Session '{session_id}' was not stored: a recording is kept only for "
            "sessions started with store: true.", code=limits.unstored_code, param="session_id"),
            code=limits.unstored_code)
    now_ms = host.timeline_ms() if host is not None and host.recording is rec else 0.0
    caller, model, n = rec.tracks(now_ms)
    if n >= BIG_WAV_BYTES:
        body = await asyncio.get_running_loop().run_in_executor(core_pool(), live_host.wav, caller, model, n)
    else:
        body = live_host.wav(caller, model, n)
    resp = web.Response(status=200, body=body, content_type="audio/wav")
    return answer(resp, bytes=len(body), audio_ms=round(n / 2 / live_host.REC_RATE * 1000, 1))


def timeline_of(server: MockServer, session_id: str) -> str | None:
    """The journal timeline of a Live session id: its call's, its own, or none (an id never seen)."""
    call = server.call_on("live", session_id)
    if call is not None:
        return call.call_id
    return session_id if server.journal.timeline(session_id) is not None else None


def fork_refusal(server: MockServer, session_id: str, why: str) -> tuple[web.Response, str]:
    """The HTTP answer to forking an unknown (404) or unstored session (the recording download's answer)."""
    if why == "unknown":
        refusal = c.not_found("live")
        return rest_io.refusal_response(refusal), refusal.code
    limits = live_host.registry(server).recording
    return errors.rest_error(limits.unstored_status, f"Session '{session_id}' was not stored: only sessions started "
                             "with store: true can be forked.", code=limits.unstored_code,
                             param="session_id"), limits.unstored_code


async def fork(request: web.Request) -> web.Response:
    """``POST /v1/live/sessions/{session_id}/fork``: a WebRTC fork, refused as a WebRTC create is once the
    session and the body check out."""
    server: MockServer = request.app[SERVER_KEY]
    session_id = request.match_info["session_id"]
    jid = timeline_of(server, session_id)

    def answer(resp: web.Response, code: str | None) -> web.Response:
        server.journal.add(jid, je.LiveRefused(status=resp.status, session_id=session_id, path=request.path,
                                               code=code))
        return resp

    denied = server.admit(request)
    if denied is not None:
        return answer(denied, "unauthorized")
    try:
        body = await rest_io.read_json(request, server, allow_empty=False)
    except rest_io.BadRequest as exc:
        return answer(exc.response, None)
    source = await live_host.fork_source(server, session_id)
    if isinstance(source, str):
        return answer(*fork_refusal(server, session_id, source))
    problem = validate_payload(SessionForkParams, body, "")
    if problem is not None:
        return answer(param_error(problem), problem.code)
    outbound = server.config.live_outbound
    return answer(errors.rest_error(
        outbound.webrtc_status, "WebRTC transports are not emulated by this mock: fork over the WebSocket "
        "(client.live.forks.connect) or test WebRTC against the real service.", code=outbound.webrtc_code,
        param="transport.type"), outbound.webrtc_code)
