"""Shared fixtures: a real mock on 127.0.0.1, a real webhook receiver, the official SDK as client."""

from __future__ import annotations

import fnmatch
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from openai import AsyncOpenAI

from harness.softphone import Softphone
from mock_api import fidelity
from mock_api.client import MockClient
from mock_api.config import MockConfig, RetryPolicy
from mock_api.running import RunningMock, SipOptions, running_mock
from sipworker import sip_available, sip_missing
from tests.helpers import WebhookReceiver
from tests.sip_helpers import SCRIPT, Receiver

FAST_RETRY = RetryPolicy(max_attempts=4, initial_delay_s=0.05, max_delay_s=0.2, timeout_s=1.0)

# ---- marker "sip": tests that need pjsua2 (the 'sip' extra) ------------------------------------------
# Marked by what they use: a SIP fixture, or (for tests that start SIP workers themselves, through the
# runner, `rtsip call`, `rtsip demo` or a SIP scenario) their node id below.  Where pjsua2 is missing they
# skip with the one line that says what to install; `pytest -m "not sip"` leaves them out;
# RTSIP_REQUIRE_SIP=1 (CI where the wheel exists) makes a missing pjsua2 an error instead of skips.
SIP_FIXTURES = frozenset({"sip_stack", "sip_phone", "openai_mock_sip", "softphone", "azure_sip"})
SIP_TESTS = (
    "tests/test_sip_calls.py::*",
    "tests/test_sip_ingress.py::*",
    "tests/test_sip_ingress_failures.py::*",
    "tests/test_caller_identity.py::test_load_gives_each_sip_caller_its_own_reproducible_number",
    "tests/test_caller_identity.py::test_scenario_from_and_to_in_sip_mode",
    "tests/test_caller_identity.py::test_rtsip_call_from_the_command_line",
    "tests/test_cli.py::test_mock_with_sip_prints_uri_and_ca",
    "tests/test_demo.py::test_rtsip_demo",
    "tests/test_intercept_cli.py::test_hard_coded_app_by_hand_through_rtsip_mock_intercept",
    "tests/test_load.py::test_twelve_sip_calls_two_way_audio",
    "tests/test_load.py::test_sip_scenario_in_virtual_mode_is_rejected",  # both plan sip-mode runs too
    "tests/test_load.py::test_ports_left_in_time_wait_are_not_taken",
    "tests/test_node_intercept.py::test_node_sip_call_through_the_proxy",
    "tests/test_openai_agents_app.py::*",
    "tests/test_ports.py::test_sip_call_has_two_way_audio_while_the_old_fixed_rtp_ports_are_held",
    "tests/test_ports.py::test_sip_ingress_starts_on_a_port_left_in_time_wait",
    "tests/test_readme.py::test_readme_section_works_as_written[[]your_app_against_the_mock_by_hand[]]",
    "tests/test_readme.py::test_readme_section_works_as_written[[]rtsip_call[]]",
    "tests/test_readme.py::test_readme_section_works_as_written[[]benchmarks[]]",  # bench_sip, bench_load --sip
    # README's taken --sip-port example needs the SIP ingress (without pjsua2 `rtsip mock` serves without one)
    "tests/test_readme.py::test_readme_section_works_as_written[[]rtsip_mock[]]",
    "tests/test_pytest_plugin.py::test_howto_runs_as_written",  # docs/pytest.md has a real SIP call
    "tests/test_sip_units.py::test_native_port_plays_then_is_reused_silent",
    "tests/test_sip_units.py::test_worker_without_the_c_module_falls_back_to_python_ports",
    "tests/test_sip_units.py::test_reused_frame_port_carries_no_audio_into_the_next_call",
    "tests/test_report_audio.py::test_a_result_names_no_recording_the_runner_removed",
    "tests/test_report_audio.py::test_rtsip_run_html_shows_what_the_caller_heard",
    "tests/test_report_audio.py::test_keep_leaves_the_recording_the_report_drew",
    "tests/test_report_audio.py::test_rtsip_demo_report_shows_what_the_caller_heard",
    "tests/test_shutdown.py::test_a_signal_hangs_up_sip_calls_and_closes_their_sockets",
)
REQUIRE_SIP_ENV = "RTSIP_REQUIRE_SIP"


def needs_sip(item: pytest.Item) -> bool:
    """True for a test that places or answers a real SIP call (so it needs pjsua2)."""
    if item.get_closest_marker("sip") is not None:
        return True
    if SIP_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        return True
    return any(fnmatch.fnmatchcase(item.nodeid, pattern) for pattern in SIP_TESTS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the SIP tests; skip them, with the reason in one line, only when pjsua2 is missing."""
    available = sip_available()
    if not available and os.environ.get(REQUIRE_SIP_ENV):
        raise pytest.UsageError(f"{REQUIRE_SIP_ENV} is set but {sip_missing()}")
    skip = pytest.mark.skip(reason=sip_missing())
    for item in items:
        if needs_sip(item):
            item.add_marker(pytest.mark.sip)
            if not available:
                item.add_marker(skip)


@pytest.fixture
def without_pjsua2(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as if pjsua2 were not installed: a None entry in sys.modules is how the import
    system spells "no such module", so find_spec and import both say so (no worker starts)."""
    monkeypatch.setitem(sys.modules, "pjsua2", None)


@pytest.fixture(autouse=True)
def sdk_parses_every_server_event(tmp_path_factory: pytest.TempPathFactory,
                                  monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fidelity guard for every test: each WebSocket event any mock sends must parse with the SDK.

    The mock (in-process or a child process) validates each event it sends and appends any
    mismatch to the audit file; a test whose run wrote there fails.
    """
    audit = tmp_path_factory.mktemp("audit") / "server-events.jsonl"
    monkeypatch.setenv(fidelity.AUDIT_ENV, str(audit))  # mock processes the test starts
    monkeypatch.setattr(fidelity, "audit_path", str(audit))  # mocks running in this process
    yield
    if audit.exists() and audit.read_text().strip():
        lines = audit.read_text().strip().splitlines()
        pytest.fail(f"{len(lines)} server event(s) the SDK cannot parse; first: {lines[0][:500]}")


@pytest.fixture
async def mock() -> AsyncIterator[RunningMock]:
    async with running_mock(MockConfig(retry=FAST_RETRY)) as m:
        yield m


@pytest.fixture
async def control(mock: RunningMock) -> AsyncIterator[MockClient]:
    async with MockClient(mock.url) as client:
        yield client


@pytest.fixture
async def receiver(mock: RunningMock) -> AsyncIterator[WebhookReceiver]:
    r = await WebhookReceiver(secret=mock.server.config.webhook_secret or "").start()
    mock.server.config = mock.server.config.model_copy(update={"webhook_url": r.url})
    yield r
    await r.stop()


@pytest.fixture
async def client(mock: RunningMock) -> AsyncIterator[AsyncOpenAI]:
    c = AsyncOpenAI(api_key="sk-test-key", base_url=mock.base_url, max_retries=0)
    yield c
    await c.close()


@pytest.fixture
async def sip_stack(tmp_path: Path, request: pytest.FixtureRequest,
                    ) -> AsyncIterator[tuple[RunningMock, Receiver, MockClient]]:
    """The mock with its SIP ingress, a webhook receiver and the control client.  Native frame
    ports unless a test parametrizes ``sip_stack`` indirectly with "python"."""
    config = MockConfig(script=SCRIPT, ring_timeout_s=10)
    media = getattr(request, "param", "native")
    async with running_mock(config, sip=SipOptions(tmp_path / "mock", port=0, workers=2, media=media)) as mock:
        receiver = await Receiver(secret=mock.server.config.webhook_secret or "").start()
        mock.server.config = mock.server.config.model_copy(update={"webhook_url": receiver.url})
        async with MockClient(mock.url) as control:
            yield mock, receiver, control
        await receiver.stop()


@pytest.fixture
async def sip_phone(sip_stack: tuple[RunningMock, Receiver, MockClient], tmp_path: Path,
                request: pytest.FixtureRequest) -> AsyncIterator[Softphone]:
    """A softphone trusting the stack's CA; a module sets PHONE_WORKERS for more than 4 calls at once."""
    mock = sip_stack[0]
    assert mock.sip is not None
    workers = getattr(request.module, "PHONE_WORKERS", 1)
    media = mock.sip.pool.configs[0].media  # the same kind of frame ports as the ingress
    async with Softphone(ca=mock.sip.certs.ca, state_dir=tmp_path / "phone", workers=workers, media=media) as p:
        yield p


from tests.realtime_fixtures import realtime_event_validator  # noqa: E402, F401  (fixture re-export)
