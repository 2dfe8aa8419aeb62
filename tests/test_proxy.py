"""Zero-change interception: real clients with hard-coded OpenAI URLs reach the mock through the CONNECT proxy.

Every client runs in a child process with nothing but the environment from ``proxy_env`` (libraries
read proxies and CA bundles at import or construction time), talks to ``https://api.openai.com`` /
``wss://api.openai.com``, and the mock's journal must show what it sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import stat
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mock_api import certs
from mock_api.client import MockClient
from mock_api.config import MockConfig
from mock_api.journal import SERVER
from mock_api.proxy import InterceptProxy, host_allowed, proxy_env, running_proxy
from mock_api.running import RunningMock, running_mock
from mock_api.stall_watch import StallWatch
from tests.helpers import until

API_KEY = "sk-rtsip-proxy-test"
STALL_S = 0.25  # an event-loop stall of the mock this long is journaled (mock.stall, with the loop's stack)
_STORIES: dict[int, RunningMock] = {}  # the mock of the running test's stack, for a failing child's story
ACCEPT = {"type": "realtime", "model": "gpt-realtime", "instructions": "Be brief."}
_PROXY_VARS = {"http_proxy", "https_proxy", "wss_proxy", "ws_proxy", "all_proxy", "no_proxy", "ssl_cert_file",
               "ssl_cert_dir", "requests_ca_bundle", "curl_ca_bundle", "openai_base_url"}


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[RunningMock, InterceptProxy, MockClient]]:
    async with running_mock(MockConfig()) as mock, running_proxy(mock, tmp_path / "state") as proxy, \
            MockClient(mock.url) as control:
        watch = StallWatch(mock.server.journal, STALL_S).start()  # a stall shows in a failure's story
        _STORIES[id(proxy)] = mock
        try:
            yield mock, proxy, control
        finally:
            watch.stop()
            _STORIES.pop(id(proxy), None)


def child_env(proxy: InterceptProxy, *, base_url: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}
    env.update(proxy_env(proxy, proxy.ca_path))
    env["OPENAI_API_KEY"] = API_KEY
    if not base_url:
        env.pop("OPENAI_BASE_URL")  # the SDK's own default, https://api.openai.com/v1
    return env


async def run_child(code: str, env: dict[str, str], timeout: float = 60) -> Any:
    """Run ``code`` in a fresh interpreter; it prints one JSON line last, which is returned. A failure
    says what the mock saw meanwhile (the story of its journal: tunnels, requests, sockets, loop stalls)."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", textwrap.dedent(code), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    if proc.returncode != 0:
        mock = next(iter(_STORIES.values()), None)
        took = time.monotonic() - started
        pytest.fail(f"child failed ({proc.returncode}) after {took:.1f} s:\n{err.decode()[-3000:]}\n"
                    f"what the mock journaled:\n{story(mock) if mock is not None else '(no mock)'}", pytrace=False)
    return json.loads(out.decode().strip().splitlines()[-1])


def story(mock: RunningMock, limit: int = 60) -> str:
    """The mock's journal as one line per entry, every timeline merged in time order (audio left out)."""
    journal = mock.server.journal
    lines = []
    for key in [SERVER, *journal.call_ids()]:
        line = journal.timeline(key)
        if line is not None:  # seq orders every timeline's entries as they were written; the time says how far
            lines += [(e.seq, line.started_mono * 1000 + e.t_ms, key, e.kind, json.dumps(e.data, default=str)[:300])
                      for e in line.entries if not e.kind.startswith(("audio", "input_audio"))]
    lines.sort()
    t0 = min((t for _, t, *_ in lines), default=0.0)
    return "\n".join(f"{t - t0:10.1f} ms {key} {kind} {data}" for _, t, key, kind, data in lines[-limit:])


def accepted_by(mock: RunningMock, call_id: str) -> list[dict[str, Any]]:
    """The accept requests the mock journaled for a call."""
    return [e.data for e in mock.server.journal.entries(call_id, "rest.request") if e.data.get("op") == "accept"]


def proxy_entries(mock: RunningMock, kind: str) -> list[dict[str, Any]]:
    return [e.data for e in mock.server.journal.entries(None, kind)]


def assert_tunneled(mock: RunningMock) -> None:
    """The traffic came through the proxy's TLS tunnel for api.openai.com, not straight to the mock."""
    tunnels = proxy_entries(mock, "proxy.connect")
    assert tunnels and all(t == {"host": "api.openai.com", "port": 443} for t in tunnels), tunnels


# ---- REST through the proxy, one client library each ------------------------------------------------------


async def test_requests_reaches_mock_and_local_traffic_stays_direct(stack: Any) -> None:
    mock, proxy, control = stack
    cid = await control.start_call()
    result = await run_child(f"""
        import json, requests
        s = requests.Session()
        r = s.post("https://api.openai.com/v1/realtime/calls/{cid}/accept",
                   headers={{"Authorization": "Bearer {API_KEY}"}}, json={ACCEPT!r})
        r2 = s.post("https://api.openai.com/v1/realtime/calls/rtc_unknown/hangup",
                    headers={{"Authorization": "Bearer {API_KEY}"}}, json={{}})
        local = requests.get("{mock.url}/_mock/health")  # NO_PROXY: straight to the mock
        print(json.dumps([r.status_code, r.text, r2.status_code, r2.json()["error"]["code"], local.status_code]))
    """, child_env(proxy))
    assert result == [200, "", 404, "call_id_not_found", 200]
    (accept,) = accepted_by(mock, cid)
    assert accept["body"] == ACCEPT and accept["headers"]["User-Agent"].startswith("python-requests/")
    # keep-alive: both API calls went through one tunnel; the local GET never touched the proxy
    assert proxy_entries(mock, "proxy.connect") == [{"host": "api.openai.com", "port": 443}]
    assert (await control.call(cid)).state == "active"


async def test_httpx_reaches_mock(stack: Any) -> None:
    mock, proxy, control = stack
    cid = await control.start_call()
    result = await run_child(f"""
        import json, httpx
        with httpx.Client() as c:
            r = c.post("https://api.openai.com/v1/realtime/calls/{cid}/accept",
                       headers={{"Authorization": "Bearer {API_KEY}"}}, json={ACCEPT!r})
            r2 = c.post("https://api.openai.com/v1/realtime/calls/{cid}/hangup",
                        headers={{"Authorization": "Bearer {API_KEY}"}})
        print(json.dumps([r.status_code, r2.status_code]))
    """, child_env(proxy))
    assert result == [200, 200]
    assert accepted_by(mock, cid)[0]["headers"]["User-Agent"].startswith("python-httpx/")
    assert_tunneled(mock)
    assert (await control.call(cid)).state == "ended"


async def test_aiohttp_trust_env_reaches_mock_rest_and_websocket(stack: Any) -> None:
    mock, proxy, control = stack
    cid = await control.start_call()
    result = await run_child(f"""
        import asyncio, json, aiohttp
        async def main():
            auth = {{"Authorization": "Bearer {API_KEY}"}}
            async with aiohttp.ClientSession(trust_env=True) as s:
                async with s.post("https://api.openai.com/v1/realtime/calls/{cid}/accept", headers=auth,
                                  json={ACCEPT!r}) as r:
                    status = r.status
                async with s.ws_connect("wss://api.openai.com/v1/realtime?call_id={cid}", headers=auth) as ws:
                    first = json.loads((await ws.receive()).data)["type"]
            return [status, first]
        print(json.dumps(asyncio.run(main())))
    """, child_env(proxy))
    assert result == [200, "session.created"]
    assert accepted_by(mock, cid)[0]["headers"]["User-Agent"].startswith("Python/")
    assert_tunneled(mock)
    assert any(e.kind == "ws.connect" for e in mock.server.journal.entries(cid))


async def test_openai_sdk_sync_default_base_url(stack: Any) -> None:
    mock, proxy, control = stack
    cid = await control.start_call()
    result = await run_child(f"""
        import json
        from openai import OpenAI
        client = OpenAI(max_retries=0)  # nothing but the environment
        client.realtime.calls.accept("{cid}", type="realtime", model="gpt-realtime", instructions="Be brief.")
        with client.realtime.connect(call_id="{cid}") as conn:
            first = conn.recv().type
            conn.send({{"type": "response.create", "response": {{"instructions": "Say hi"}}}})
            while (ev := conn.recv()).type != "response.created":
                pass
        print(json.dumps([str(client.base_url), first, ev.type]))
    """, child_env(proxy, base_url=False))
    assert result == ["https://api.openai.com/v1/", "session.created", "response.created"]
    assert accepted_by(mock, cid)[0]["headers"]["User-Agent"].startswith("OpenAI/Python")
    assert_tunneled(mock)
    sent = [e.data["event"]["type"] for e in mock.server.journal.entries(cid, "ws.client")]
    assert "response.create" in sent


async def test_openai_sdk_async_default_base_url(stack: Any) -> None:
    mock, proxy, control = stack
    cid = await control.start_call()
    result = await run_child(f"""
        import asyncio, json
        from openai import AsyncOpenAI
        async def main():
            client = AsyncOpenAI(max_retries=0)
            await client.realtime.calls.accept("{cid}", type="realtime", model="gpt-realtime",
                                               instructions="Be brief.")
            async with client.realtime.connect(call_id="{cid}") as conn:
                first = (await conn.recv()).type
            await client.realtime.calls.hangup("{cid}")
            return [str(client.base_url), first]
        print(json.dumps(asyncio.run(main())))
    """, child_env(proxy, base_url=False))
    assert result == ["https://api.openai.com/v1/", "session.created"]
    assert accepted_by(mock, cid)[0]["headers"]["User-Agent"].startswith("AsyncOpenAI/Python")
    assert_tunneled(mock)
    assert (await control.call(cid)).state == "ended"


async def test_websockets_client_hard_coded_wss(stack: Any) -> None:
    mock, proxy, control = stack
    cid = await control.start_call()
    await control_accept(mock, cid)
    result = await run_child(f"""
        import asyncio, json, websockets
        async def main():
            async with websockets.connect("wss://api.openai.com/v1/realtime?call_id={cid}",
                                          additional_headers={{"Authorization": "Bearer {API_KEY}"}}) as ws:
                first = json.loads(await ws.recv())["type"]
                await ws.send(json.dumps({{"type": "response.create"}}))
                while (ev := json.loads(await ws.recv()))["type"] != "response.done":
                    pass
                return [websockets.__version__, first, ev["type"]]
        print(json.dumps(asyncio.run(main())))
    """, child_env(proxy))
    assert result[1:] == ["session.created", "response.done"]
    assert_tunneled(mock)
    assert [e.data["event"]["type"] for e in mock.server.journal.entries(cid, "ws.client")] == ["response.create"]


async def control_accept(mock: RunningMock, call_id: str) -> None:
    """Accept in-process (plain HTTP to the mock), for tests about the socket only."""
    import aiohttp

    async with aiohttp.ClientSession() as s, s.post(f"{mock.base_url}/realtime/calls/{call_id}/accept",
                                                  headers={"Authorization": f"Bearer {API_KEY}"}, json=ACCEPT) as r:
        assert r.status == 200


async def test_azure_resource_host_is_intercepted(stack: Any) -> None:
    import httpx

    mock, proxy, control = stack
    cid = await control.start_call()
    trust = ssl.create_default_context(cafile=str(proxy.ca_path))
    async with httpx.AsyncClient(proxy=proxy.url, verify=trust) as http:
        r = await http.post(f"https://my-res.openai.azure.com/openai/v1/realtime/calls/{cid}/accept",
                            headers={"api-key": API_KEY}, json=ACCEPT)
    assert r.status_code == 200
    assert accepted_by(mock, cid)[0]["path"] == f"/openai/v1/realtime/calls/{cid}/accept"
    assert proxy_entries(mock, "proxy.connect") == [{"host": "my-res.openai.azure.com", "port": 443}]


# ---- refusals and trust ------------------------------------------------------------------------------------


async def _raw(proxy: InterceptProxy, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(data)
    await writer.drain()
    out = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return out


async def test_connect_to_other_hosts_is_refused_and_journaled(stack: Any) -> None:
    mock, proxy, _ = stack
    out = await _raw(proxy, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 403 ")
    out = await _raw(proxy, b"CONNECT api.openai.com:8443 HTTP/1.1\r\nHost: api.openai.com:8443\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 403 ")
    out = await _raw(proxy, b"GET http://example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 403 ")
    refused = proxy_entries(mock, "proxy.refused")
    assert [(r["host"], r["port"], r["method"]) for r in refused] == [
        ("example.com", 443, "CONNECT"), ("api.openai.com", 8443, "CONNECT"), ("example.com", 80, "GET")]
    assert proxy_entries(mock, "proxy.connect") == []


async def test_requests_to_other_hosts_fail_in_the_app(stack: Any) -> None:
    mock, proxy, _ = stack
    result = await run_child("""
        import json, requests
        out = []
        for url in ("https://example.com/", "http://example.com/"):
            try:
                out.append(requests.get(url, timeout=10).status_code)
            except requests.exceptions.ProxyError as e:
                out.append("ProxyError")
        print(json.dumps(out))
    """, child_env(proxy))
    assert result == ["ProxyError", 403]
    assert {r["host"] for r in proxy_entries(mock, "proxy.refused")} == {"example.com"}


async def test_plain_http_absolute_form_to_openai_is_relayed(stack: Any) -> None:
    _, proxy, _ = stack
    out = await _raw(proxy, b"GET http://api.openai.com/v1/models HTTP/1.1\r\nHost: api.openai.com\r\n"
                            b"Authorization: Bearer " + API_KEY.encode() + b"\r\nProxy-Connection: keep-alive\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 ") and b'"object": "list"' in out


async def test_the_control_api_is_not_reachable_through_an_intercepted_host(stack: Any) -> None:
    """``/_mock/`` holds the webhook secret: through the proxy it does not exist, and the refusal is journaled."""
    mock, proxy, _ = stack
    for path in (b"/_mock/config", b"/_mock/reset"):
        out = await _raw(proxy, b"GET http://api.openai.com" + path + b" HTTP/1.1\r\nHost: api.openai.com\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 404 ") and b"Invalid URL" in out and b"whsec_" not in out
    refused = await until(lambda: proxy_entries(mock, "proxy.control_refused"), what="the journaled refusals")
    assert [r["path"] for r in refused] == ["/_mock/config", "/_mock/reset"]
    async with MockClient(mock.url) as control:
        assert (await control.config())["webhook_secret"].startswith("whsec_")


def test_every_api_host_the_sdk_knows_is_intercepted() -> None:
    from openai import _data_residency

    urls = [u for u in vars(_data_residency).values() if isinstance(u, dict) for u in u.values()]
    hosts = {u.split("/")[2] for u in urls if isinstance(u, str) and u.startswith("https://")}
    assert len(hosts) >= 5
    for host in hosts | {"api.openai.com", "mtls.api.openai.com", "mtls-eu.api.openai.com"}:
        assert host_allowed(host), host
    assert not host_allowed("api.openai.com.evil.example") and not host_allowed("a.b.api.openai.com")


async def test_client_that_does_not_trust_the_ca_fails_verification(stack: Any, tmp_path: Path) -> None:
    mock, proxy, _ = stack

    async def tunnel(ctx: ssl.SSLContext) -> bytes:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        writer.write(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n")
        await writer.drain()
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
        try:
            await writer.start_tls(ctx, server_hostname="api.openai.com")
            writer.write(b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer "
                         + API_KEY.encode() + b"\r\nConnection: close\r\n\r\n")
            return await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()

    other = certs.ensure_ca(tmp_path / "someone-else")[0]  # a CA that did not sign the proxy's leaves
    with pytest.raises(ssl.SSLCertVerificationError):
        await tunnel(ssl.create_default_context(cafile=str(other)))
    (failed,) = await until(lambda: proxy_entries(mock, "proxy.tls_failed"), what="the journaled TLS failure")
    assert failed["host"] == "api.openai.com"
    # the same tunnel with the local CA works, and the leaf names the host
    trusted = ssl.create_default_context(cafile=str(proxy.ca_path))
    assert (await tunnel(trusted)).startswith(b"HTTP/1.1 200 ")


def test_host_allow_list() -> None:
    for host in ("api.openai.com", "API.OpenAI.com.", "eu.api.openai.com", "my-res.openai.azure.com",
                 "foundry1.cognitiveservices.azure.com"):
        assert host_allowed(host), host
    for host in ("example.com", "openai.com", "sip.api.openai.com", "api.openai.com.evil.example",
                 "a.b.openai.azure.com", "openai.azure.com", "-bad.openai.azure.com", "", "api.openai.com:443"):
        assert not host_allowed(host), host


def test_proxy_env_names_everything_clients_read(tmp_path: Path) -> None:
    env = proxy_env("http://127.0.0.1:9", tmp_path / "ca.pem")
    for name in ("HTTPS_PROXY", "https_proxy", "WSS_PROXY", "wss_proxy", "HTTP_PROXY", "http_proxy"):
        assert env[name] == "http://127.0.0.1:9"
    assert env["NO_PROXY"] == env["no_proxy"] and {"127.0.0.1", "localhost"} <= set(env["NO_PROXY"].split(","))
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        assert env[name] == str((tmp_path / "ca.pem").resolve())
    assert env["OPENAI_BASE_URL"] == "https://api.openai.com/v1"


# ---- the certificate store ------------------------------------------------------------------------------------


def test_ca_key_persisted_and_leaves_reused(tmp_path: Path) -> None:
    paths = certs.ensure_certs(tmp_path)
    assert paths.created and paths.ca_key is not None
    assert stat.S_IMODE(paths.ca_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.key.stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate(paths.ca.read_bytes())
    store = certs.CertStore(tmp_path)
    cert_p, key_p = store.leaf_files("API.openai.com")
    assert cert_p.name == "api.openai.com.pem" and stat.S_IMODE(key_p.stat().st_mode) == 0o600
    leaf = x509.load_pem_x509_certificate(cert_p.read_bytes())
    leaf.verify_directly_issued_by(ca)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["api.openai.com"]
    # reused: on disk across stores, in memory within one
    assert certs.CertStore(tmp_path).leaf_files("api.openai.com") == (cert_p, key_p)
    assert cert_p.read_bytes() == leaf.public_bytes(Encoding.PEM)
    assert store.leaf_for("api.openai.com") is store.leaf_for("api.openai.com.")
    # the SIP cert is still reused and chains to the same persisted CA
    again = certs.ensure_certs(tmp_path)
    assert not again.created and again.ca.read_bytes() == paths.ca.read_bytes()


def test_ca_without_key_is_replaced_with_everything_it_signed(tmp_path: Path) -> None:
    paths = certs.ensure_certs(tmp_path)
    old_leaf = certs.CertStore(tmp_path).leaf_files("x.openai.azure.com")[0].read_bytes()
    old_ca = paths.ca.read_bytes()
    assert paths.ca_key is not None
    paths.ca_key.unlink()  # e.g. a state dir from before the key was kept
    fresh = certs.ensure_certs(tmp_path)
    assert fresh.created and fresh.ca.read_bytes() != old_ca
    ca = x509.load_pem_x509_certificate(fresh.ca.read_bytes())
    x509.load_pem_x509_certificate(fresh.cert.read_bytes()).verify_directly_issued_by(ca)
    new_leaf, _ = certs.CertStore(tmp_path).leaf_files("x.openai.azure.com")
    assert new_leaf.read_bytes() != old_leaf
    x509.load_pem_x509_certificate(new_leaf.read_bytes()).verify_directly_issued_by(ca)
    with pytest.raises(ValueError, match="not a hostname"):
        certs.CertStore(tmp_path).leaf_files("not a host")
