"""Azure OpenAI as Azure apps call it: the ``AzureOpenAI`` client's dated paths and ``wss://`` socket.

``AzureOpenAI(azure_endpoint=..., api_version=...)`` posts to ``/openai/realtime/calls/{id}/...?api-version=``
with an ``api-key`` header and always opens ``wss://.../openai/realtime?call_id=...&deployment=...``, so the
mock serves those paths and an HTTPS/WSS listener signed by its local CA. The end-to-end test runs an app on
``AsyncAzureOpenAI`` (tests/apps/azure_sip_app.py) as its own process, trusting the CA through
``SSL_CERT_FILE``, and a real SIP/TLS call from the softphone. The others check the front door's answers
(api-version, key), Azure's accept rules and the listener, over real sockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import openai
import pytest
from openai import AsyncAzureOpenAI, DefaultAsyncHttpxClient
from openai.types.realtime import ResponseDoneEvent, SessionCreatedEvent

from harness.app_process import AppProcess
from harness.mock_process import MockProcess
from harness.softphone import Softphone
from mock_api import audio
from mock_api.client import MockClient, MockControlError
from mock_api.config import MockConfig
from mock_api.running import RunningMock, SipOptions, TlsOptions, running_mock
from tests.helpers import until

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "tests" / "apps" / "azure_sip_app.py"
RTSIP = Path(sys.executable).parent / "rtsip"
VERSION = "2025-04-01-preview"
KEY = "0123456789abcdef0123456789abcdef"  # an Azure key: 32 hex digits, no sk- prefix
DEPLOYMENT = "contoso-realtime"
INSTRUCTIONS = "You are the Contoso claims line."
ACCEPT = {"type": "realtime", "model": DEPLOYMENT, "instructions": INSTRUCTIONS}
NOT_FOUND = {"error": {"code": "404", "message": "Resource not found"}}
BAD_VERSION = {"error": {"code": "BadRequest", "message": "API version not supported"}}


@pytest.fixture
async def tls_mock(tmp_path: Path) -> AsyncIterator[tuple[RunningMock, MockClient]]:
    """The mock with its HTTPS/WSS listener, no SIP."""
    async with running_mock(MockConfig(), tls=TlsOptions(tmp_path / "state")) as mock, \
            MockClient(mock.url) as control:
        yield mock, control


def azure_client(endpoint: str, ca: Path | None = None, **kwargs: Any) -> AsyncAzureOpenAI:
    """The SDK's Azure client; over TLS it trusts the mock's CA (given here, not through the environment)."""
    http = DefaultAsyncHttpxClient(verify=ssl.create_default_context(cafile=str(ca))) if ca else None
    return AsyncAzureOpenAI(azure_endpoint=endpoint, api_version=kwargs.pop("api_version", VERSION),
                            api_key=kwargs.pop("api_key", None if "azure_ad_token" in kwargs else KEY),
                            max_retries=0, http_client=http, **kwargs)


async def post(url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(url, json=body, headers=headers) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text else ""


def refusals(mock: RunningMock) -> list[str]:
    """Why Azure's front door refused, in order (the server journal's ``azure.refused`` entries)."""
    return [e.data["reason"] for e in mock.server.journal.entries(None, "azure.refused")]


def voiced_ms(pcm: bytes, rate: int = 8000) -> int:
    """How many milliseconds of ``pcm`` (in 20 ms frames) are louder than -40 dBFS: silence is not audio."""
    floor = 32768 * 10 ** (-40 / 20)
    loud = [f for f in audio.frames(pcm, rate, 20, pad=False)
            if float(np.sqrt(np.mean(audio.to_array(f).astype(np.float64) ** 2))) > floor]
    return 20 * len(loud)


# ---- the AzureOpenAI client's call controls -------------------------------------------------------------


async def test_azure_client_drives_every_call_control(mock: RunningMock, control: MockClient) -> None:
    client = azure_client(mock.url)
    try:
        hung_up, referred, busy, declined = [await control.start_call() for _ in range(4)]
        await client.realtime.calls.accept(hung_up, type="realtime", model=DEPLOYMENT, instructions=INSTRUCTIONS)
        await client.realtime.calls.hangup(hung_up)
        await client.realtime.calls.accept(referred, type="realtime", model=DEPLOYMENT, instructions=INSTRUCTIONS)
        await client.realtime.calls.refer(referred, target_uri="tel:+14155550123")
        await client.realtime.calls.reject(busy, status_code=486)  # the guide's "too busy" example
        await client.realtime.calls.reject(declined)
        secret = await client.realtime.client_secrets.create(session={"type": "realtime", "model": DEPLOYMENT})
    finally:
        await client.close()
    assert secret.value.startswith("ek_") and getattr(secret.session, "model", None) == DEPLOYMENT
    view = await control.call(hung_up)
    assert (view.state, view.end_reason, view.accept_body) == ("ended", "hangup", ACCEPT)
    [accept, hangup] = view.of_kind("rest.request")
    assert accept.data["path"] == f"/openai/realtime/calls/{hung_up}/accept"
    assert accept.data["query"] == {"api-version": VERSION}
    assert accept.data["headers"]["authorization"] == "012******cdef"  # the api-key header, masked
    assert hangup.data["path"] == f"/openai/realtime/calls/{hung_up}/hangup"
    assert (await control.wait_for(referred, lambda v: v.terminal)).refer_target == "tel:+14155550123"
    assert [(await control.call(c)).sip_final_status for c in (busy, declined)] == [486, 603]


async def test_entra_bearer_token_is_taken_like_a_key(mock: RunningMock, control: MockClient) -> None:
    call_id = await control.start_call()
    client = azure_client(mock.url, azure_ad_token="eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.entra")
    try:
        await client.realtime.calls.accept(call_id, type="realtime", model=DEPLOYMENT, instructions=INSTRUCTIONS)
    finally:
        await client.close()
    [request] = (await control.call(call_id)).of_kind("rest.request")
    assert "api-key" not in str(request.data["headers"]).lower() and request.data["headers"]["authorization"]
    assert (await control.call(call_id)).state == "active"


# ---- the front door: api-version and key ------------------------------------------------------------------


async def test_missing_or_unknown_api_version_answers_azures_errors(mock: RunningMock, control: MockClient) -> None:
    call_id = await control.start_call()
    accept = f"{mock.url}/openai/realtime/calls/{call_id}/accept"
    key = {"api-key": KEY}
    assert await post(accept, ACCEPT, key) == (404, NOT_FOUND)
    assert await post(accept + "?api-version=2023-05-15", ACCEPT, key) == (400, BAD_VERSION)
    # the versionless v1 path takes no dated version either, only "preview"/"latest" or none
    v1 = f"{mock.url}/openai/v1/realtime/calls/{call_id}/accept"
    assert await post(v1 + f"?api-version={VERSION}", ACCEPT, key) == (400, BAD_VERSION)
    assert refusals(mock) == ["api_version_missing", "api_version_unsupported", "api_version_unsupported"]
    assert (await control.call(call_id)).state == "ringing"
    # the server keeps serving: the same accept with a served version goes through
    assert await post(accept + f"?api-version={VERSION}", ACCEPT, key) == (200, "")
    assert (await control.call(call_id)).state == "active"


async def test_accepted_api_versions_come_from_the_config(mock: RunningMock, control: MockClient) -> None:
    await control.configure(azure_api_versions=["2099-01-01-preview"])
    call_id = await control.start_call()
    old, new = azure_client(mock.url), azure_client(mock.url, api_version="2099-01-01-preview")
    try:
        with pytest.raises(openai.BadRequestError) as exc:
            await old.realtime.calls.accept(call_id, type="realtime", model=DEPLOYMENT, instructions=INSTRUCTIONS)
        assert exc.value.code == "BadRequest" and exc.value.body == BAD_VERSION["error"]
        await new.realtime.calls.accept(call_id, type="realtime", model=DEPLOYMENT, instructions=INSTRUCTIONS)
    finally:
        await old.close()
        await new.close()
    assert (await control.call(call_id)).state == "active"
    with pytest.raises(MockControlError) as refused:
        await control.configure(azure_api_versions=None)
    assert refused.value.status == 400 and refused.value.body["error"]["param"] == "azure_api_versions"


async def test_missing_or_wrong_key_answers_azures_401(mock: RunningMock, control: MockClient) -> None:
    call_id = await control.start_call()
    accept = f"{mock.url}/openai/realtime/calls/{call_id}/accept?api-version={VERSION}"
    status, body = await post(accept, ACCEPT)
    assert status == 401 and body["error"]["code"] == "401" and set(body["error"]) == {"code", "message"}
    assert "missing subscription key" in body["error"]["message"]
    await control.configure(api_keys=[KEY])
    status, body = await post(accept, ACCEPT, {"api-key": "ffffffffffffffffffffffffffffffff"})
    assert status == 401 and "invalid subscription key" in body["error"]["message"]
    assert refusals(mock) == ["key_missing", "key_invalid"]
    assert (await control.call(call_id)).state == "ringing"
    # OpenAI's own paths keep OpenAI's answer: api-key means nothing there
    status, body = await post(f"{mock.url}/v1/realtime/calls/{call_id}/accept", ACCEPT, {"api-key": KEY})
    assert status == 401 and body["error"]["type"] == "invalid_request_error"
    assert "didn't provide an API key" in body["error"]["message"]
    # and the server keeps serving: Bearer works on Azure paths as well as api-key
    assert await post(accept, ACCEPT, {"Authorization": f"Bearer {KEY}"}) == (200, "")


# ---- Azure's accept rules ------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["type", "model", "instructions"])
@pytest.mark.parametrize("path", ["/openai/realtime", "/openai/v1/realtime"])
async def test_accept_without_what_azure_requires_is_400(missing: str, path: str, mock: RunningMock,
                                                         control: MockClient) -> None:
    call_id = await control.start_call()
    url = f"{mock.url}{path}/calls/{call_id}/accept" + (f"?api-version={VERSION}" if "/v1/" not in path else "")
    body = {k: v for k, v in ACCEPT.items() if k != missing}
    status, answer = await post(url, body, {"api-key": KEY})
    assert status == 400
    assert answer["error"] == {"message": f"Missing required parameter: '{missing}'.", "type": "invalid_request_error",
                               "param": missing, "code": "missing_required_parameter"}
    view = await control.call(call_id)
    assert view.state == "ringing" and view.accept_body is None
    assert await post(url, {**body, missing: ACCEPT[missing]}, {"api-key": KEY}) == (200, "")
    assert (await control.call(call_id)).state == "active"


async def test_openai_paths_keep_their_rules_and_azures_are_configurable(mock: RunningMock,
                                                                          control: MockClient) -> None:
    bare = {"type": "realtime"}  # no model, no instructions: fine for OpenAI
    openai_call, azure_call = await control.start_call(), await control.start_call()
    bearer = {"Authorization": "Bearer sk-test-key"}
    assert await post(f"{mock.url}/v1/realtime/calls/{openai_call}/accept", bare, bearer) == (200, "")
    await control.configure(azure_accept_required=["model"])
    status, answer = await post(f"{mock.url}/openai/realtime/calls/{azure_call}/accept?api-version={VERSION}",
                                {"type": "realtime", "instructions": "hi"}, {"api-key": KEY})
    assert (status, answer["error"]["param"]) == (400, "model")
    await control.configure(azure_accept_required=[])
    assert await post(f"{mock.url}/openai/realtime/calls/{azure_call}/accept?api-version={VERSION}", bare,
                      {"api-key": KEY}) == (200, "")
    assert [(await control.call(c)).state for c in (openai_call, azure_call)] == ["active", "active"]


# ---- the socket and the HTTPS/WSS listener --------------------------------------------------------------


async def test_azure_client_socket_over_wss(tls_mock: tuple[RunningMock, MockClient]) -> None:
    mock, control = tls_mock
    assert mock.tls_ca is not None and mock.tls_url.startswith("https://127.0.0.1:")
    call_id = await control.start_call()
    client = azure_client(mock.tls_url, ca=mock.tls_ca)
    trust = ssl.create_default_context(cafile=str(mock.tls_ca))
    try:
        await client.realtime.calls.accept(call_id, type="realtime", model=DEPLOYMENT, instructions=INSTRUCTIONS)
        # the options go to websockets' connect(), which takes ssl= though the SDK's TypedDict does not list it
        options: Any = {"ssl": trust}
        async with client.realtime.connect(call_id=call_id, model=DEPLOYMENT,
                                           websocket_connection_options=options) as conn:
            await conn.send({"type": "response.create"})
            done = None
            async for event in conn:
                if isinstance(event, ResponseDoneEvent):
                    done = event
                    break
        await client.realtime.calls.hangup(call_id)
        # a socket of its own names the deployment, whatever it is called
        async with client.realtime.connect(model="voice-bot", websocket_connection_options=options) as own:
            created = await own.recv()
    finally:
        await client.close()
    assert done is not None and done.response.status == "completed"
    assert isinstance(created, SessionCreatedEvent) and created.session.type == "realtime"
    assert created.session.model == "voice-bot"
    view = await control.call(call_id)
    [connect] = view.of_kind("ws.connect")
    assert connect.data["path"] == "/openai/realtime" and connect.data["tls"] is True
    assert connect.data["query"] == {"call_id": call_id, "api-version": VERSION, "deployment": DEPLOYMENT}
    headers = {name.lower(): value for name, value in connect.data["headers"]}
    assert headers["api-key"] == "012******cdef" and KEY not in str(connect.data)
    assert all(e.data.get("tls") for e in view.of_kind("rest.request"))
    assert view.state == "ended"


async def test_azure_socket_refusals_come_before_the_upgrade(mock: RunningMock, control: MockClient) -> None:
    call_id = await control.start_call()
    await control.configure(api_keys=[KEY])
    base = mock.url.replace("http", "ws") + f"/openai/realtime?call_id={call_id}&deployment={DEPLOYMENT}"
    cases = [(base, {"api-key": KEY}, 404), (base + f"&api-version={VERSION}", {}, 401),
             (base + f"&api-version={VERSION}", {"api-key": "wrong"}, 401),
             (base + "&api-version=2020-01-01", {"api-key": KEY}, 400)]
    async with aiohttp.ClientSession() as http:
        for url, headers, status in cases:
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await http.ws_connect(url, headers=headers)
            assert exc.value.status == status, url
    assert refusals(mock) == ["api_version_missing", "key_missing", "key_invalid", "api_version_unsupported"]
    assert [e.data["status"] for e in mock.server.journal.entries(call_id, "ws.refused")] == [404, 401, 401, 400]
    assert "ws.connect" not in (await control.call(call_id)).kinds()


async def test_rtsip_mock_tls_port_serves_https_and_names_it(tmp_path: Path) -> None:
    env = {**os.environ, "RTSIP_STATE_DIR": str(tmp_path / "state")}
    async with MockProcess(["--port", "0", "--no-sip", "--tls-port", "0"], env=env, startup_timeout=60) as proc:
        endpoint = proc.ready["azure_endpoint"]
        assert re.fullmatch(r"https://127\.0\.0\.1:\d+", endpoint) and proc.ready["tls_base_url"] == endpoint + "/v1"
        shown = await asyncio.to_thread(subprocess.run, [str(RTSIP), "env", "--format", "json"], env=env,
                                        capture_output=True, text=True, timeout=60)
        app_env = json.loads(shown.stdout)
        assert app_env["AZURE_OPENAI_ENDPOINT"] == endpoint and app_env["OPENAI_API_VERSION"]
        ca = app_env["SSL_CERT_FILE"]
        assert Path(ca) == tmp_path / "state" / "tls" / "ca.pem"
        trust = ssl.create_default_context(cafile=ca)
        async with aiohttp.ClientSession() as http, http.get(endpoint + "/_mock/health", ssl=trust) as resp:
            assert resp.status == 200 and (await resp.json())["ok"] is True


def test_a_taken_tls_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([str(RTSIP), "mock", "--port", "0", "--no-sip", "--tls-port", str(port)],
                              env={**os.environ, "RTSIP_STATE_DIR": str(tmp_path / "state")},
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"rtsip mock: cannot listen on 127.0.0.1:{port}: Address already in use; pick another with --tls-port "
        "(0 picks a free one)"]


# ---- end to end: an AsyncAzureOpenAI app over a real SIP/TLS call ------------------------------------


@pytest.fixture
async def azure_sip(tmp_path: Path) -> AsyncIterator[tuple[RunningMock, MockClient, Softphone]]:
    state = tmp_path / "mock"
    async with running_mock(MockConfig(ring_timeout_s=10), sip=SipOptions(state, port=0, workers=1),
                            tls=TlsOptions(state)) as mock, MockClient(mock.url) as control:
        assert mock.sip is not None
        async with Softphone(ca=mock.sip.certs.ca, state_dir=tmp_path / "phone") as phone:
            yield mock, control, phone


async def test_async_azure_openai_app_completes_a_sip_call(azure_sip: tuple[RunningMock, MockClient, Softphone],
                                                           ) -> None:
    mock, control, phone = azure_sip
    assert mock.sip is not None and mock.tls_ca is not None
    app = AppProcess([sys.executable, str(APP)], env={
        "AZURE_OPENAI_ENDPOINT": mock.tls_url, "OPENAI_API_VERSION": VERSION, "AZURE_OPENAI_API_KEY": KEY,
        "AZURE_OPENAI_DEPLOYMENT": DEPLOYMENT, "OPENAI_WEBHOOK_SECRET": mock.server.config.webhook_secret or "",
        "SSL_CERT_FILE": str(mock.tls_ca), "NO_PROXY": "127.0.0.1,localhost"})
    await app.start()
    try:
        await app.wait_ready(port=0, http_path=None, log_regex=r"azure_sip_app listening on", timeout=60)
        port = re.search(r"listening on http://127\.0\.0\.1:(\d+)", app.output)
        assert port is not None
        await control.configure(webhook_url=f"http://127.0.0.1:{port.group(1)}/webhook")
        call = await phone.call(mock.sip.uri("proj_contoso"))
        assert await call.answered(timeout=20), app.tail()
        await call.ended(timeout=30)
        await until(lambda: "websocket closed" in app.output, timeout=15, what="the app's socket to close")
    finally:
        await app.stop()
    [view] = await control.calls()
    out = app.output
    # the app greeted over the wss:// socket and hung up once the caller had heard it
    for line in ("incoming call", f"accepted as deployment {DEPLOYMENT}", "websocket connected",
                 "ASSISTANT: Welcome to Contoso claims, how can I help", "audio started", "audio stopped",
                 "hung up"):
        assert f"[{view.call_id}] {line}" in out, out
    assert "ERROR" not in out and "Traceback" not in out, out
    assert (view.state, view.end_reason, call.ended_by) == ("ended", "hangup", "remote")
    # the caller heard the greeting's audio
    assert call.time_to_first_audio_ms is not None and call.recording
    assert voiced_ms(audio.load_audio(call.recording, 8000)) >= 1000
    # every request came in the AzureOpenAI way, over TLS
    [accept, hangup] = view.of_kind("rest.request")
    assert [accept.data["op"], hangup.data["op"]] == ["accept", "hangup"]
    assert accept.data["path"] == f"/openai/realtime/calls/{view.call_id}/accept"
    assert accept.data["query"] == {"api-version": VERSION} and accept.data["tls"] is True
    assert accept.data["body"] == {"type": "realtime", "model": DEPLOYMENT,
                                   "instructions": "You are the Contoso claims line. Keep answers short."}
    [connect] = view.of_kind("ws.connect")
    assert connect.data["path"] == "/openai/realtime" and connect.data["tls"] is True
    assert connect.data["query"]["deployment"] == DEPLOYMENT and connect.data["query"]["call_id"] == view.call_id
