"""GPT-Live's call controls: ``/v1/live/sessions/{session_id}/accept|reject|refer|hangup``.

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
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from openai.types.live.session_accept_params import SessionAcceptParams
from openai.types.live.session_refer_params import SessionReferParams
from openai.types.live.session_reject_params import SessionRejectParams

from . import calls as c
from . import errors
from .realtime.validation import ParamError, validate_payload
from .rest_io import Op, bad_refer_target, outcome_response, param_error, referable
from .server import MockServer


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
