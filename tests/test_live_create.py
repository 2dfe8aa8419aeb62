"""``POST /v1/live/sessions`` without a SIP stack: the create body's rules (the session checked by the SDK's
``MediaSessionConfigParam``, the SIP transport by the mock's own model as SDK 3.57 types only WebRTC),
WebRTC refused in the API's shape, loopback trunks refused only under the real-service rules, the 201, and
a dial that cannot happen reported on the sideband as ``transport.failed`` then ``session.closed``.
Also the trunk side's digest check (:mod:`sipworker.digest`) against the answers RFC 2617 defines."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from mock_api.client import MockClient
from mock_api.live.outbound import (
    AcceptCall,
    Action,
    Dial,
    FailCall,
    HangUp,
    Leg,
    LegState,
    OutboundSettings,
    Refused,
    TransportEvent,
    check_create,
    failure_code,
    parse_trunk_url,
    refused_host,
)
from mock_api.running import RunningMock
from sipworker.digest import Challenger, expected_response, parse_credentials
from tests.helpers import until
from tests.test_live_sideband import Sideband

SESSION: dict[str, Any] = {"model": "gpt-live-1", "instructions": "You call to confirm an appointment."}
LOCAL, REAL = OutboundSettings(), OutboundSettings(rules="real")


def transport(**changes: Any) -> dict[str, Any]:
    trunk = {"provider_url": "sips:trunk.example.com:5061", "caller_number": "+18005550100",
             "auth": {"type": "digest", "username": "acct-42", "password": "s3cret"}}
    trunk.update(changes.pop("trunk", {}))
    return {"type": "sip", "destination": "+14155550123", "trunk": trunk, **changes}


def refused(body: dict[str, Any], settings: OutboundSettings = LOCAL) -> tuple[int, str, str | None]:
    result = check_create(body, settings)
    assert isinstance(result, Refused), result
    return result.status, result.code, result.param


# ---- the rules, sans-I/O ----------------------------------------------------------------------------------------


def test_a_valid_body_becomes_a_dial_plan() -> None:
    plan = check_create({"session": SESSION, "transport": transport()}, LOCAL)
    assert not isinstance(plan, Refused)
    assert (plan.destination, plan.username, plan.password, plan.caller_number) == (
        "+14155550123", "acct-42", "s3cret", "+18005550100")
    assert plan.trunk.request_uri(plan.destination) == "sip:+14155550123@trunk.example.com:5061;transport=tls"


@pytest.mark.parametrize(("body", "code", "param"), [
    ({"session": SESSION}, "missing_required_parameter", "transport"),
    ({"session": SESSION, "transport": transport(), "extra": 1}, "unknown_parameter", "extra"),
    ({"session": SESSION, "transport": {"type": "pstn"}}, "invalid_value", "transport.type"),
    ({"session": {"model": " "}, "transport": transport()}, "invalid_value", "session.model"),
    ({"session": {"model": "gpt-live-1", "audio": {"format": {"type": "audio/pcmu"}}}, "transport": transport()},
     "unknown_parameter", "session.audio.format"),
    ({"session": SESSION, "transport": transport(destination="sip:bob@example.com")}, "invalid_value",
     "transport.destination"),
    ({"session": SESSION, "transport": transport(destination="+0123")}, "invalid_value", "transport.destination"),
    ({"session": SESSION, "transport": transport(trunk={"caller_number": "18005550100"})}, "invalid_value",
     "transport.trunk.caller_number"),
    ({"session": SESSION, "transport": transport(trunk={"auth": {"type": "basic", "username": "u", "password": "p"}})},
     "invalid_value", "transport.trunk.auth.type"),
    ({"session": SESSION, "transport": transport(trunk={"auth": {"type": "digest", "username": "  ", "password": ""}})},
     "invalid_value", "transport.trunk.auth.username"),
    ({"session": SESSION, "transport": transport(trunk={"auth": {"type": "digest", "username": "u" * 257,
                                                                 "password": ""}})},
     "invalid_value", "transport.trunk.auth.username"),
    ({"session": SESSION, "transport": transport(trunk={"auth": {"type": "digest", "username": "u",
                                                                 "password": "p" * 4097}})},
     "invalid_value", "transport.trunk.auth.password"),
    ({"session": SESSION, "transport": transport(trunk={"auth": {"type": "digest", "username": "u",
                                                                 "password": "a\r\nX-Evil: 1"}})},
     "invalid_value", "transport.trunk.auth.password"),
    ({"session": SESSION, "transport": transport(trunk={"region": "eu"})}, "unknown_parameter",
     "transport.trunk.region"),
    ({"session": SESSION, "transport": transport(trunk={"provider_url": 5061})}, "invalid_type",
     "transport.trunk.provider_url"),
])
def test_what_a_create_body_must_be(body: dict[str, Any], code: str, param: str) -> None:
    assert refused(body) == (400, code, param)


@pytest.mark.parametrize(("url", "host", "port"), [
    ("sips:trunk.example.com", "trunk.example.com", 5061),
    ("SIPS:trunk.example.com:5071;transport=tcp", "trunk.example.com", 5071),
    ("sips:[2001:db8::1]:5062", "[2001:db8::1]", 5062),
    ("sips:127.0.0.1:40123", "127.0.0.1", 40123),
])
def test_a_trunk_url_is_sips_host_and_port(url: str, host: str, port: int) -> None:
    parsed = parse_trunk_url(url)
    assert not isinstance(parsed, str), parsed
    assert (parsed.host, parsed.port) == (host, port)


@pytest.mark.parametrize("url", [
    "sip:trunk.example.com:5060", "sips:acct@trunk.example.com", "sips:trunk.example.com/path",
    "sips:trunk.example.com?X-H=1", "sips:trunk.example.com;transport=udp", "sips:trunk.example.com;lr",
    "sips:trunk.example.com:0", "sips:trunk.example.com:99999", "sips:[not-v6]", "sips:bad_host!",
])
def test_anything_but_a_sips_host_and_port_is_refused(url: str) -> None:
    assert refused({"session": SESSION, "transport": transport(trunk={"provider_url": url})}) == (
        400, "invalid_value", "transport.trunk.provider_url")


@pytest.mark.parametrize(("host", "kind"), [
    ("127.0.0.1", "loopback"), ("[::1]", "loopback"), ("10.1.2.3", "private"), ("192.168.0.9", "private"),
    ("169.254.1.1", "link-local"), ("0.0.0.0", "unspecified"), ("224.0.0.1", "multicast"),
    ("localhost", "local"), ("pbx.local", "local"), ("pbx", "local"), ("trunk.example.com", None),
    ("8.8.8.8", None),
])
def test_the_real_rules_know_local_hosts(host: str, kind: str | None) -> None:
    assert refused_host(host) == kind
    body = {"session": SESSION, "transport": transport(trunk={"provider_url": f"sips:{host}"})}
    assert not isinstance(check_create(body, LOCAL), Refused)  # the local bench dials them all
    if kind is not None:
        assert refused(body, REAL) == (400, "invalid_value", "transport.trunk.provider_url")


def test_webrtc_is_refused_in_the_configured_shape() -> None:
    body = {"session": SESSION, "transport": {"type": "webrtc", "sdp": "v=0"}}
    assert refused(body) == (400, "unsupported_transport", "transport.type")
    assert refused(body, OutboundSettings(webrtc_status=501, webrtc_code="webrtc_not_emulated"))[:2] == (
        501, "webrtc_not_emulated")


# ---- the leg core: events and a clock in, actions out ------------------------------------------------------


def dialed(settings: OutboundSettings = LOCAL, at: float = 0.0) -> Leg:
    """A leg whose dial went out at ``at`` (a sideband attached at once)."""
    leg = Leg(settings)
    assert leg.created(at) == []
    assert leg.sideband_attached(at) == [Dial("sideband")]
    return leg


def failed_of(actions: list[Action]) -> tuple[TransportEvent, list[Action]]:
    """The ``transport.failed`` an input led to, and the actions after it."""
    assert actions, "no actions"
    first, *rest = actions
    assert isinstance(first, TransportEvent) and first.state == "failed", actions
    return first, rest


def test_the_dial_waits_for_the_first_sideband_or_the_wait() -> None:
    leg = Leg(OutboundSettings(sideband_wait_s=5))
    assert leg.created(100) == [] and leg.next_deadline() == 105
    assert leg.tick(104.9) == []
    assert leg.sideband_attached(104.9) == [Dial("sideband")] and leg.state is LegState.DIALING
    assert leg.sideband_attached(105) == []  # a second sideband dials nothing
    timed_out = Leg(OutboundSettings(sideband_wait_s=5))
    timed_out.created(100)
    assert timed_out.tick(105) == [Dial("timeout")]
    late = Leg(OutboundSettings(sideband_wait_s=5))
    late.created(100)
    assert late.sideband_attached(106) == [Dial("timeout")]  # the wait was over before it attached
    assert Leg(OutboundSettings(sideband_wait_s=0)).created(100) == [Dial("timeout")]


def test_a_call_over_before_the_dial_fails_the_leg_at_once() -> None:
    leg = Leg(LOCAL)
    leg.created(0)
    failed, then = failed_of(leg.call_ended(1, by_app=True))
    assert then == []  # the call is already over: nothing to fail
    assert failed == TransportEvent("failed", leg.failure, None, "hangup", "close_requested")
    assert failed.error == {"type": "call_error", "code": "cancelled",
                            "message": "The outbound call failed: SIP 487 hung up before the dial."}
    assert leg.next_deadline() is None and leg.over
    assert leg.sideband_attached(2) == [] and leg.tick(10) == []


def test_worker_call_states_move_the_leg_once() -> None:
    leg = dialed()
    assert leg.sip_state(1, "CALLING", None, None) == []
    assert leg.sip_state(1, "EARLY", 180, "Ringing") == [TransportEvent("ringing", sip_status=180,
                                                                        sip_reason="Ringing")]
    assert leg.sip_state(2, "EARLY", 183, "Session Progress") == []
    assert leg.sip_state(3, "CONNECTING", 200, "OK") == [TransportEvent("answered", sip_status=200, sip_reason="OK"),
                                                          AcceptCall()]
    assert leg.sip_state(3, "CONFIRMED", 200, "OK") == [] and leg.next_deadline() is None
    assert leg.sip_ended(9, 200, "Normal call clearing") == [] and leg.state is LegState.ENDED
    assert leg.sip_ended(9, 500, "late") == [] and leg.call_ended(9, by_app=False) == []


def test_the_ring_cap_fails_the_call() -> None:
    leg = dialed(OutboundSettings(ring_timeout_s=30), at=10)
    leg.sip_state(11, "EARLY", 180, "Ringing")
    assert leg.next_deadline() == 40 and leg.tick(39.9) == []
    failed, then = failed_of(leg.tick(40))
    assert (failed.state, failed.sip_status, failed.sip_reason, failed.close_reason) == (
        "failed", 408, "ring timeout", "connection_lost")
    assert failed.error == {"type": "call_error", "code": "no_answer",
                            "message": "The outbound call failed: SIP 408 no answer within 30 s."}
    assert then == [FailCall("outbound call failed: no_answer")]  # its SIP final CANCELs the leg
    assert leg.sip_ended(41, 487, "Request Terminated") == [] and leg.call_ended(41, by_app=False) == []


def test_a_late_answer_loses_to_the_ring_cap() -> None:
    leg = dialed(OutboundSettings(ring_timeout_s=30))
    failed, _ = failed_of(leg.sip_state(31, "CONFIRMED", 200, "OK"))  # the cap fell due first
    assert failed.sip_status == 408 and leg.state is LegState.FAILED


def test_a_hangup_while_it_rings_closes_as_requested() -> None:
    leg = dialed()
    leg.sip_state(1, "EARLY", 180, "Ringing")
    assert leg.call_ended(2, by_app=True) == []  # the call table CANCELs; the leg's end says how it went
    failed, then = failed_of(leg.sip_ended(3, 487, "Request Terminated"))
    assert then == [] and (failed.error or {})["code"] == "cancelled" and failed.close_reason == "close_requested"


def test_an_answer_after_the_hangup_gets_a_bye() -> None:
    leg = dialed()
    leg.call_ended(1, by_app=True)
    assert leg.sip_state(2, "CONNECTING", 200, "OK") == [
        TransportEvent("answered", sip_status=200, sip_reason="OK", to_session=False), HangUp()]


def test_a_failure_is_named_once_and_renamed_as_configured() -> None:
    leg = dialed(OutboundSettings(failure_codes={"busy": "callee_busy"}, failed_close_reason="remote_hangup"))
    failed, then = failed_of(leg.sip_ended(1, 486, "Busy Here"))
    assert failed == TransportEvent("failed", {"type": "call_error", "code": "callee_busy",
                                               "message": "The outbound call failed: SIP 486 Busy Here."},
                                    486, "Busy Here", "remote_hangup")
    assert then == [FailCall("outbound call failed: callee_busy")]
    assert leg.sip_state(2, "CONFIRMED", 200, "OK") == [] and leg.state is LegState.FAILED
    refused = dialed()
    failed, _ = failed_of(refused.dial_refused(0, "no SIP ingress to dial from"))
    assert (failed.error or {})["code"] == "connection_failed" and failed.sip_status is None


@pytest.mark.parametrize(("status", "reason", "code"), [
    (401, "Unauthorized", "authentication_failed"), (407, "Proxy Authentication Required", "authentication_failed"),
    (503, "SSL certificate verification error (PJSIP_TLS_ECERTVERIF)", "tls_failed"), (486, "Busy Here", "busy"),
    (408, "Request Timeout", "no_answer"), (404, "Not Found", "not_found"), (603, "Decline", "declined"),
    (503, "Connection refused", "connection_failed"), (488, "Not Acceptable Here", "media_not_acceptable"),
    (500, "Server Internal Error", "sip_error"),
])
def test_failure_codes(status: int, reason: str, code: str) -> None:
    assert failure_code(status, reason) == code


# ---- digest on the trunk side ---------------------------------------------------------------------------------


def _answer(challenge: str, username: str, password: str, qop: bool) -> str:
    """What a SIP client sends back (RFC 2617 §3.2.2), computed here from the definition."""
    _, p = parse_credentials(challenge)
    md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
    ha1, ha2 = md5(f"{username}:{p['realm']}:{password}"), md5("INVITE:sip:+1415@trunk")
    if qop:
        resp = md5(f"{ha1}:{p['nonce']}:00000001:c0ffee:auth:{ha2}")
        extra = ', qop=auth, nc=00000001, cnonce="c0ffee"'
    else:
        resp, extra = md5(f"{ha1}:{p['nonce']}:{ha2}"), ""
    return (f'Digest username="{username}", realm="{p["realm"]}", nonce="{p["nonce"]}", '
            f'uri="sip:+1415@trunk", response="{resp}", algorithm=MD5{extra}')


@pytest.mark.parametrize("qop", [True, False])
def test_digest_takes_the_right_password_once(qop: bool) -> None:
    trunk = Challenger("acct-42", "s3cret")
    assert trunk.check("INVITE", []) == "missing"
    [(name, challenge)] = trunk.challenge().items()
    assert (name, trunk.status) == ("WWW-Authenticate", 401)
    good = [("Authorization", _answer(challenge, "acct-42", "s3cret", qop))]
    assert trunk.check("INVITE", [("Authorization", _answer(challenge, "acct-42", "nope", qop))]) == "wrong password"
    assert trunk.check("INVITE", good) is None
    assert trunk.check("INVITE", good) == "unknown nonce"  # a nonce is good for one call
    _, params = parse_credentials(good[0][1])
    assert expected_response(params, "INVITE", "s3cret") == params["response"]


def test_a_proxy_challenge_is_answered_in_proxy_headers() -> None:
    trunk = Challenger("acct-42", "s3cret", proxy=True)
    [(name, challenge)] = trunk.challenge().items()
    assert (name, trunk.status, trunk.credentials_header) == ("Proxy-Authenticate", 407, "Proxy-Authorization")
    answer = _answer(challenge, "acct-42", "s3cret", True)
    assert trunk.check("INVITE", [("Authorization", answer)]) == "missing"
    assert trunk.check("INVITE", [("Proxy-Authorization", answer)]) is None


# ---- over HTTP with the SDK, no SIP ingress -------------------------------------------------------------------


@pytest.fixture
async def app(mock: RunningMock) -> AsyncIterator[AsyncOpenAI]:
    client = AsyncOpenAI(api_key="sk-app", base_url=mock.base_url, max_retries=0)
    yield client
    await client.close()


async def test_refusals_come_in_the_api_envelope(app: AsyncOpenAI, mock: RunningMock, control: MockClient) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await app.live.create(session=SESSION, transport={"type": "webrtc", "sdp": "v=0"})  # type: ignore[arg-type]
    assert err.value.body == {"message": err.value.body["message"], "type": "invalid_request_error",  # type: ignore
                              "param": "transport.type", "code": "unsupported_transport"}
    with pytest.raises(openai.BadRequestError) as err:
        await app.live.create(session=SESSION, transport=transport(  # type: ignore[arg-type]
            trunk={"provider_url": "sip:trunk.example.com"}))
    assert err.value.body["param"] == "transport.trunk.provider_url"  # type: ignore[index]
    await control.configure(live_outbound=REAL.model_dump(mode="json"))
    with pytest.raises(openai.BadRequestError):
        await app.live.create(session=SESSION, transport=transport(  # type: ignore[arg-type]
            trunk={"provider_url": "sips:127.0.0.1:5061"}))
    refusals = mock.server.journal.entries(None, "live.create")
    assert [e.data["code"] for e in refusals] == ["unsupported_transport", "invalid_value", "invalid_value"]
    body = {"session": SESSION, "transport": transport()}
    async with aiohttp.ClientSession() as http, http.post(f"{mock.base_url}/live/sessions", json=body) as resp:
        assert resp.status == 401  # no key: the 401 every REST route gives
    assert len(mock.server.calls) == 0  # nothing refused was dialed or kept


async def test_a_create_without_sip_ingress_fails_on_the_sideband(app: AsyncOpenAI, control: MockClient) -> None:
    created = await app.live.create(session=SESSION, transport=transport())  # type: ignore[arg-type]
    live_id = created.session.id
    assert created.transport.type == "sip"
    async with app.live.sideband.connect(session_id=live_id) as conn:
        sb = Sideband(conn)
        failed = await sb.until("transport.failed")
        assert failed["session_id"] == live_id
        assert (failed["error"]["type"], failed["error"]["code"]) == ("call_error", "connection_failed")
        closed = await sb.until("session.closed")
        assert (closed["reason"], closed["session"]["id"]) == ("connection_lost", live_id)
    [view] = [v for v in await control.calls() if v.live_id == live_id]
    assert (view.surface, view.state) == ("live", "failed")
    [made] = view.of_kind("live.create")
    assert made.data["body"]["transport"]["trunk"]["auth"]["password"] == "<redacted>"
    assert "s3cret" not in str([e.data for e in view.entries])
    [dial] = view.of_kind("live.dial")
    assert (dial.data["waited_for"], dial.data["error"]) == ("sideband", "no SIP ingress is running")


async def _view(control: MockClient, live_id: str, kind: str) -> Any:
    """The call's view once its journal has an entry of ``kind`` (None before)."""
    views = [v for v in await control.calls() if v.live_id == live_id]
    return views[0] if views and views[0].of_kind(kind) else None


async def test_a_hangup_before_the_dial_fails_the_leg_at_once(app: AsyncOpenAI, control: MockClient) -> None:
    await control.configure(live_outbound={"sideband_wait_s": 600})  # no sideband: the dial is far off
    live_id = (await app.live.create(session=SESSION, transport=transport())).session.id  # type: ignore[arg-type]
    await app.live.sessions.hangup(live_id)
    view = await until(lambda: _view(control, live_id, "live.transport"), what="the leg's transport.failed")
    [moved] = view.of_kind("live.transport")
    assert moved.data == {"state": "failed", "sip_status": None, "sip_reason": "hangup", "code": "cancelled"}
    assert view.of_kind("live.dial") == [] and view.state == "ended"


async def test_no_wait_for_a_sideband_dials_at_once(app: AsyncOpenAI, control: MockClient) -> None:
    await control.configure(live_outbound={"sideband_wait_s": 0})
    live_id = (await app.live.create(session=SESSION, transport=transport())).session.id  # type: ignore[arg-type]
    view = await until(lambda: _view(control, live_id, "live.dial"), what="the dial")
    [dial] = view.of_kind("live.dial")
    assert (dial.data["waited_for"], dial.data["error"]) == ("timeout", "no SIP ingress is running")
    view = await until(lambda: _view(control, live_id, "live.transport"), what="transport.failed")
    [moved] = view.of_kind("live.transport")
    assert moved.data["code"] == "connection_failed"


# ---- `rtsip answer`: a mistake is one line and exit 2, before any SIP worker starts ---------------------------

RTSIP = Path(sys.executable).parent / "rtsip"
FIXTURE = str(Path(__file__).resolve().parents[1] / "audio_fixtures" / "caller_greeting.wav")


@pytest.mark.parametrize(("args", "says"), [
    (("--port", "0"), "--fixture"),
    (("--port", "-1", "--fixture", FIXTURE), "--port"),
    (("--port", "0", "--fixture", "/nope.wav"), "--fixture /nope.wav: no such file"),
    (("--port", "0", "--fixture", FIXTURE, "--username", "u"), "--username and --password go together"),
    (("--port", "0", "--fixture", FIXTURE, "--reject", "200"), "--reject must be a SIP final status"),
    (("--port", "0", "--fixture", FIXTURE, "--challenge", "403"), "--challenge"),
    (("--port", "0", "--fixture", FIXTURE, "--record", "/no/such/dir/out.wav"), "--record"),
])
def test_rtsip_answer_refuses_bad_flags(args: tuple[str, ...], says: str, tmp_path: Path) -> None:
    done = subprocess.run([str(RTSIP), "answer", *args, "--state-dir", str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
