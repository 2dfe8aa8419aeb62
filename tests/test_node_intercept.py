"""Node apps against ``rtsip mock``: each recipe of docs/interception-node.md, run for real.

tests/apps/node_app/app.mjs is a webhook-driven SIP agent with OpenAI's URLs as the Node SDK has them
(``OPENAI_BASE_URL`` if set, else ``https://api.openai.com/v1``); its two knobs choose how fetch and
``ws`` reach the API. Each test runs ``rtsip mock`` (with ``--intercept`` where the recipe needs it),
gives the app what ``rtsip env`` prints, places a call (through the control API; once a real SIP call
with ``rtsip call``) and reads the mock's journal: did the accept and the socket come through the
interception proxy, and did the app's hang-up end the call.

What does not work is tested too, and must fail the way the docs say: the connection goes to the real
``api.openai.com`` and dies on name resolution. So that no request can ever leave the machine, every
process of these tests runs in a private network namespace that has only loopback (Linux, root: CI).

The Node under test is ``node`` on PATH, or ``$RTSIP_TEST_NODE`` (e.g. a Node 24 to check the
version-dependent recipes); its packages come from ``npm ci`` in tests/apps/node_app.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from harness.mock_process import MockProcess
from mock_api.client import MockClient
from mock_api.control_models import CallView
from mock_api.running import free_port
from tests.helpers import until

ROOT = Path(__file__).resolve().parents[1]
RTSIP = str(Path(sys.executable).parent / "rtsip")
APP_DIR = ROOT / "tests" / "apps" / "node_app"
NODE = os.environ.get("RTSIP_TEST_NODE") or shutil.which("node")
REAL_HOST = "api.openai.com"
DNS_FAILURES = {"ENOTFOUND", "EAI_AGAIN"}  # no such name / no resolver reachable: both mean "never left"
BUDGET_S = 90.0  # one test, start to finish; pytest's own timeout is 120 s
FAIL_FAST_S = 10.0  # a connection to the real host must fail within this, not hang
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
T = TypeVar("T")

pytestmark = pytest.mark.skipif(
    NODE is None, reason="node is not installed: apt-get install nodejs npm, then npm ci in tests/apps/node_app")


class NoPrivateNetwork(Exception):
    """The kernel refused a network namespace (not root): the tests cannot promise to stay offline."""


def _enter_private_network() -> None:
    """Move the calling thread, and every process it starts from now on, into a new network namespace
    whose only interface is loopback, brought up here: 127.0.0.1 works, nothing else is reachable."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise NoPrivateNetwork(os.strerror(ctypes.get_errno()))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH14x", b"lo", 0)))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def offline(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main`` on an event loop of its own, in a thread that lives in a private network namespace.

    A network namespace belongs to a thread, so the loop, its sockets and its child processes (the
    mock, the app, ``rtsip env``) all stay inside; pytest's own thread is untouched.
    """
    def run() -> T:
        _enter_private_network()
        return asyncio.run(asyncio.wait_for(main(), BUDGET_S))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="offline") as pool:
        try:
            return pool.submit(run).result()
        except NoPrivateNetwork as exc:
            pytest.skip(f"needs a private network namespace so nothing can reach the internet (run as root, "
                        f"as CI does): unshare(CLONE_NEWNET): {exc}")


# ---- which Node does what -------------------------------------------------------------------------------


def node_version() -> tuple[int, int]:
    assert NODE is not None
    out = subprocess.run([NODE, "-p", "process.versions.node"], capture_output=True, text=True, check=True)
    major, minor, _patch = out.stdout.strip().split(".")
    return int(major), int(minor)


def fetch_honours_env_proxy(v: tuple[int, int]) -> bool:
    """Node's own fetch and NODE_USE_ENV_PROXY=1: Node 24.0+, backported to 22.21+."""
    return v >= (24, 0) or (22, 21) <= v < (23, 0)


def https_agent_honours_env_proxy(v: tuple[int, int]) -> bool:
    """``https.globalAgent`` (``http``/``https.request``) and NODE_USE_ENV_PROXY=1: Node 24.5+ and 22.21+."""
    return v >= (24, 5) or (22, 21) <= v < (23, 0)


@dataclass(frozen=True)
class Recipe:
    """How the app reaches the API: app.mjs's NODE_APP_FETCH and NODE_APP_WS_AGENT, and whether Node
    preloads global-agent, which gives ``ws`` (and anything on ``http``/``https``) HTTPS_PROXY."""

    name: str
    fetch: str
    ws_agent: str
    preload: bool = False

    def env(self) -> dict[str, str]:
        knobs = {"NODE_APP_FETCH": self.fetch, "NODE_APP_WS_AGENT": self.ws_agent}
        if self.preload:  # an empty namespace: global-agent reads HTTPS_PROXY/NO_PROXY as `rtsip env` prints them
            knobs |= {"NODE_OPTIONS": "--require global-agent/bootstrap",
                      "GLOBAL_AGENT_ENVIRONMENT_VARIABLE_NAMESPACE": ""}
        return knobs

    def accept_proxied(self, v: tuple[int, int]) -> bool:
        return self.fetch == "undici-env" or fetch_honours_env_proxy(v)

    def socket_proxied(self, v: tuple[int, int]) -> bool:
        return self.ws_agent == "https-proxy-agent" or self.preload or (
            self.ws_agent == "https-global" and https_agent_honours_env_proxy(v))

    def failing_step(self, v: tuple[int, int]) -> str | None:
        """Where this recipe breaks on Node ``v``, or None when the whole call goes through the proxy."""
        if not self.accept_proxied(v):
            return "accept"
        return None if self.socket_proxied(v) else "socket"


INTERCEPT_RECIPES = [
    Recipe("packages", fetch="undici-env", ws_agent="https-proxy-agent"),  # any Node 18+
    Recipe("preload", fetch="undici-env", ws_agent="none", preload=True),  # any Node 18+, ws code unchanged
    Recipe("built-in", fetch="global", ws_agent="https-global"),  # Node 22.21+/24.5+ only
    Recipe("ws-without-agent", fetch="undici-env", ws_agent="none"),  # never: ws ignores proxies
    Recipe("unmodified", fetch="global", ws_agent="none"),  # never: the socket at least goes direct
]


# ---- the processes --------------------------------------------------------------------------------------


@dataclass
class NodeApp:
    """app.mjs as a child process; its stdout is one JSON object per step."""

    env: dict[str, str]
    events: list[dict[str, Any]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    _proc: asyncio.subprocess.Process | None = None
    _reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> NodeApp:
        assert NODE is not None
        self._proc = await asyncio.create_subprocess_exec(
            NODE, "app.mjs", cwd=APP_DIR, env=self.env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        self._reader = asyncio.create_task(self._read())
        await self.wait_for("listening")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._proc is not None and self._reader is not None
        if self._proc.returncode is None:
            self._proc.terminate()
        await self._proc.wait()
        await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for raw in self._proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def find(self, event: str, **match: Any) -> dict[str, Any] | None:
        return next((e for e in self.events if e["event"] == event
                     and all(e.get(k) == v for k, v in match.items())), None)

    async def wait_for(self, *events: str, timeout: float = 30, **match: Any) -> dict[str, Any]:
        """The first of ``events`` (with fields ``match``) the app reports; its whole output on a timeout."""
        def seen() -> dict[str, Any] | None:
            assert self._proc is not None
            found = next((f for f in (self.find(e, **match) for e in events) if f), None)
            if found is None and self._proc.returncode is not None:
                raise AssertionError(f"app.mjs exited ({self._proc.returncode})")
            return found
        try:
            found: dict[str, Any] = await until(seen, timeout=timeout, what=f"app.mjs: {' or '.join(events)} {match}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the app said:\n" + "\n".join(self.lines)) from None
        return found


def app_base_env() -> dict[str, str]:
    """This process's environment without anything that would steer the app by itself."""
    steering = ("OPENAI_", "NODE_OPTIONS", "NODE_USE_ENV_PROXY", "NODE_EXTRA_CA_CERTS", "NODE_APP_", "GLOBAL_AGENT_")
    return {k: v for k, v in os.environ.items()
            if not k.upper().endswith("_PROXY") and not k.upper().startswith(steering)}


async def rtsip_env(state: dict[str, str]) -> dict[str, str]:
    """What ``rtsip env --format json`` tells an app, as a user would take it."""
    shown = await asyncio.to_thread(subprocess.run, [RTSIP, "env", "--format", "json"], capture_output=True,
                                    text=True, env={**os.environ, **state}, timeout=60, cwd=ROOT)
    assert shown.returncode == 0, shown.stderr
    env: dict[str, str] = json.loads(shown.stdout)
    return env


@dataclass
class SipCaller:
    """``rtsip call`` placing a real SIP/TLS call; it hangs up by itself only long after the test's budget,
    so the call ends when the app hangs up. Killed on the way out if it is still ringing or talking."""

    uri: str
    ca: str
    env: dict[str, str]
    _proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> SipCaller:
        self._proc = await asyncio.create_subprocess_exec(
            RTSIP, "call", self.uri, "--ca", self.ca, "--hangup-after", str(BUDGET_S), env=self.env, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._proc is not None
        if self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()

    async def result(self) -> tuple[int, str]:
        """Exit status and output, once the call is over."""
        assert self._proc is not None
        out, _ = await self._proc.communicate()
        return int(self._proc.returncode or 0), out.decode(errors="replace")


@dataclass
class Outcome:
    app: NodeApp
    call: CallView
    server_journal: list[dict[str, Any]]
    mock_base_url: str
    caller: tuple[int, str] | None = None  # ``rtsip call``'s exit status and output, for a call over SIP


async def place_call(tmp: Path, recipe: Recipe | None, expect_failure: bool = False,
                     over_sip: bool = False) -> Outcome:
    """Mock (intercepting unless ``recipe`` is None, the base-URL route), app, one call, until it ends
    or the app reports the step that failed (within FAIL_FAST_S when a failure is expected).

    The call is a virtual caller from the control API, or with ``over_sip`` a real SIP/TLS call from
    ``rtsip call`` that only the app's hang-up ends (its own hang-up timer is far beyond the test's)."""
    state = {"RTSIP_STATE_DIR": str(tmp / "state")}
    port = free_port()
    intercept = ["--intercept", "--proxy-port", "0"] if recipe else []
    sip = ["--sip-port", "0"] if over_sip else ["--no-sip"]
    mock = MockProcess(["--port", "0", *sip, *intercept, "--webhook-url", f"http://127.0.0.1:{port}/webhook"],
                       env=state, startup_timeout=60)
    async with mock:
        env = {**app_base_env(), **await rtsip_env(state), "PORT": str(port), **(recipe.env() if recipe else {})}
        async with NodeApp(env) as app, MockClient(mock.url) as control, contextlib.AsyncExitStack() as stack:
            caller = None
            if over_sip:
                caller = await stack.enter_async_context(
                    SipCaller(mock.ready["sip"], mock.ready["ca"], {**os.environ, **state}))
                call_id = (await app.wait_for("webhook", timeout=60))["call_id"]
            else:
                call_id = await control.start_call(from_="sip:+14155550123@carrier.example")
                await app.wait_for("webhook", call_id=call_id)
            budget = FAIL_FAST_S if expect_failure else 30
            done = await app.wait_for("hungup", "failed", call_id=call_id, timeout=budget)
            view = await control.call(call_id)
            if done["event"] == "hungup":
                view = await control.wait_for(call_id, lambda v: v.terminal, timeout=10)
            called = await caller.result() if caller else None
            return Outcome(app, view, await control.server_journal(), mock.base_url, called)


# ---- journal reading ------------------------------------------------------------------------------------


def one(view: CallView, kind: str, **data: Any) -> int:
    """The seq of the call's only ``kind`` entry whose data has ``data``."""
    seqs = [e.seq for e in view.of_kind(kind) if all(e.data.get(k) == v for k, v in data.items())]
    assert len(seqs) == 1, f"expected one {kind} {data} in the call's journal, found {len(seqs)}: {view.kinds()}"
    return seqs[0]


def proxy_connects(journal: list[dict[str, Any]]) -> list[int]:
    """The seqs at which the interception proxy opened a tunnel to the real host's name."""
    return [e["seq"] for e in journal if e["kind"] == "proxy.connect" and e["data"]["host"] == REAL_HOST]


def host_header(view: CallView) -> str:
    [connect] = view.of_kind("ws.connect")
    return dict(connect.data["headers"])["Host"]


def assert_ended_by_app(out: Outcome) -> None:
    app, view = out.app, out.call
    assert app.find("socket.open", call_id=view.call_id), app.lines
    assert app.find("response.done", call_id=view.call_id, status="completed"), app.lines
    assert (view.state, view.end_reason) == ("ended", "hangup"), view.kinds()
    one(view, "rest.request", op="hangup")


# ---- the tests ------------------------------------------------------------------------------------------


def test_node_version_predicates_follow_the_release_notes() -> None:
    """The version rules the assertions below depend on, at their edges."""
    assert [fetch_honours_env_proxy(v) for v in [(20, 20), (22, 20), (22, 21), (23, 11), (24, 0)]] == \
        [False, False, True, False, True]
    assert [https_agent_honours_env_proxy(v) for v in [(22, 21), (24, 4), (24, 5), (26, 0)]] == \
        [True, False, True, True]


@pytest.mark.parametrize("recipe", INTERCEPT_RECIPES, ids=lambda r: r.name)
def test_hard_coded_node_app_under_intercept(recipe: Recipe, tmp_path: Path) -> None:
    failing = recipe.failing_step(node_version())
    out = offline(lambda: place_call(tmp_path, recipe, expect_failure=failing is not None))
    app, view, tunnels = out.app, out.call, proxy_connects(out.server_journal)
    assert app.find("listening", api="https://api.openai.com/v1"), app.lines  # rtsip env pins the real URL
    if failing is None:
        assert not app.find("failed", call_id=view.call_id), app.lines
        accept = one(view, "rest.request", op="accept")
        ws = one(view, "ws.connect")
        # The accept came through a tunnel opened before it, the socket through one opened after it
        # (fetch and ws never share a connection), and the socket asked for the real host.
        assert any(t < accept for t in tunnels) and any(accept < t < ws for t in tunnels), (tunnels, view.kinds())
        assert host_header(view) == REAL_HOST
        assert_ended_by_app(out)
        return
    # What does not work: the step went to the real host by itself and died on name resolution, fast.
    failed = app.find("failed", call_id=view.call_id)
    assert failed is not None and failed["step"] == failing, app.lines
    assert failed["code"] in DNS_FAILURES and failed["host"] == REAL_HOST, failed
    assert not view.of_kind("ws.connect"), view.kinds()
    if failing == "accept":
        assert not view.of_kind("rest.request") and not tunnels, (view.kinds(), tunnels)
    else:  # the accept went through the proxy; nothing after it did
        accept = one(view, "rest.request", op="accept")
        assert any(t < accept for t in tunnels) and not any(t > accept for t in tunnels), tunnels
        assert app.find("accepted", call_id=view.call_id)


def test_node_sip_call_through_the_proxy(tmp_path: Path) -> None:
    """The recipe for Node 18+ with a real caller: ``rtsip call`` over SIP/TLS, ended by the app's hang-up."""
    out = offline(lambda: place_call(tmp_path, INTERCEPT_RECIPES[0], over_sip=True))
    assert out.caller is not None
    status, said = out.caller
    assert status == 0 and "ended by: remote" in said, said  # the app's hang-up reached the phone
    assert out.call.transport == "sip"
    assert host_header(out.call) == REAL_HOST and len(proxy_connects(out.server_journal)) >= 2
    assert_ended_by_app(out)


def test_node_app_with_a_base_url_needs_no_proxy(tmp_path: Path) -> None:
    """The route for every Node version: an app that reads OPENAI_BASE_URL gets the mock's own
    http:// URL from ``rtsip env`` (no --intercept) and derives its ws:// socket URL from it."""
    out = offline(lambda: place_call(tmp_path, None))
    mock_host = out.mock_base_url.removeprefix("http://").removesuffix("/v1")
    assert out.app.find("listening", api=out.mock_base_url), out.app.lines
    one(out.call, "rest.request", op="accept")
    assert host_header(out.call) == mock_host
    assert not proxy_connects(out.server_journal)
    assert_ended_by_app(out)


def test_node_app_packages_are_installed() -> None:
    """The pinned packages are there (CI: ``npm ci`` in tests/apps/node_app), so the recipes above
    test the versions package-lock.json names, not whatever happens to be lying around."""
    lock = json.loads((APP_DIR / "package-lock.json").read_text())
    for name in ("ws", "https-proxy-agent", "undici", "global-agent"):
        installed = APP_DIR / "node_modules" / name / "package.json"
        assert installed.exists(), f"{name} is missing: run `npm ci` in {APP_DIR.relative_to(ROOT)}"
        version = json.loads(installed.read_text())["version"]
        assert version == lock["packages"][f"node_modules/{name}"]["version"], (name, version)

