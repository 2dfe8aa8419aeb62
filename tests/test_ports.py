"""Ports: a check says "taken" only when something is bound, RTP ranges avoid ports in use, and a
taken port is a one-line error naming the flag to change."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.audio_compare import windowed_correlation
from harness.softphone import Softphone
from mock_api import audio
from mock_api.config import MockConfig
from mock_api.running import SipOptions, running_mock
from sipworker import ports
from sipworker.ipc import WorkerConfig
from sipworker.ports import NoFreePorts, PortInUse, free_range, port_taken, rtp_base
from sipworker.supervisor import pool_configs
from tests.sip_helpers import CALLER, REPLY, SCRIPT, App, Receiver

ROOT = Path(__file__).resolve().parents[1]
TCP_UDP = (socket.SOCK_STREAM, socket.SOCK_DGRAM)


def time_wait_port(port: int = 0) -> int:
    """A port whose only trace is a closed connection in TIME_WAIT, as a server that closed first
    leaves it (a restarted mock, a re-run of ``rtsip load`` with the same ports)."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as pjsip's and aiohttp's listeners
        listener.bind(("127.0.0.1", port))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            conn, _ = listener.accept()
            conn.close()  # the active closer keeps the TIME_WAIT: here the server side, on `port`
            assert client.recv(1) == b""  # our FIN arrived; closing the client completes the handshake
    return port


def plain_bind_fails(port: int) -> bool:
    """What the old checks did: bind without SO_REUSEADDR."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@contextlib.contextmanager
def holding_udp(*wanted: int) -> Iterator[list[int]]:
    """Bind these UDP ports for the duration (a port someone else holds already is held just the same)."""
    with contextlib.ExitStack() as stack:
        for port in wanted:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            with contextlib.suppress(OSError):
                sock.bind(("127.0.0.1", port))
        assert all(port_taken(p, socket.SOCK_DGRAM) for p in wanted)
        yield list(wanted)


# ---- the probe ------------------------------------------------------------------------------------------


def test_time_wait_does_not_make_a_port_taken() -> None:
    port = time_wait_port()
    assert plain_bind_fails(port)  # the leftover is there, and fooled the old plain-bind check
    assert not port_taken(port)
    with socket.socket() as again:  # what a real listener does: it binds
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        again.listen()
        assert port_taken(port)


def test_bound_ports_are_taken() -> None:
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", 0))  # a listener on every address takes the port on 127.0.0.1 too
        listener.listen()
        assert port_taken(listener.getsockname()[1])
    with socket.socket() as plain:  # bound without SO_REUSEADDR, not even listening
        plain.bind(("127.0.0.1", 0))
        assert port_taken(plain.getsockname()[1])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        assert port_taken(udp.getsockname()[1], socket.SOCK_DGRAM)


def test_a_port_nobody_may_bind_is_an_error_not_taken() -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this host; the errno below is the precise check, not the message
    with pytest.raises(OSError) as err:  # noqa: PT011
        port_taken(0, host="192.0.2.1")
    assert err.value.errno == errno.EADDRNOTAVAIL


# ---- RTP ranges -----------------------------------------------------------------------------------------


def test_range_allocator_skips_a_range_with_one_bound_port() -> None:
    base = free_range(16)
    with holding_udp(base + 5):
        # bases base, base + 2, base + 4 contain base + 5; base + 6 and base + 8 do not
        found = {free_range(8, bounds=range(base, base + 16)) for _ in range(20)}
        assert found <= {base + 6, base + 8} and found
        with pytest.raises(NoFreePorts, match="no 12 consecutive free ports"):
            free_range(12, bounds=range(base, base + 16))


def test_rtp_ranges_are_even_apart_and_outside_the_ephemeral_range() -> None:
    a, b = rtp_base(3), rtp_base(3)
    span = 3 * ports.RTP_SPAN
    got = [range(a, a + span), range(b, b + span)]
    eph = ports.ephemeral_ports()
    for r in got:
        assert r.start % 2 == 0 and r.start in ports.RTP_PORTS and r.stop - 1 in ports.RTP_PORTS
        assert not (eph and r.start < eph.stop and eph.start < r.stop), (r, eph)
    assert not set(got[0]) & set(got[1])  # ranges one process hands out do not overlap


def test_pool_configs_pick_a_free_range_unless_given_one() -> None:
    template = WorkerConfig(name="t")
    picked = pool_configs(3, template)
    assert [c.rtp_port - picked[0].rtp_port for c in picked] == [0, ports.RTP_SPAN, 2 * ports.RTP_SPAN]
    assert {c.rtp_port_range for c in picked} == {ports.RTP_SPAN}
    assert not any(port_taken(p, socket.SOCK_DGRAM) for p in range(picked[0].rtp_port, picked[0].rtp_port + 6))
    fixed = pool_configs(2, template, rtp_base=24000, rtp_span=100)
    assert [(c.rtp_port, c.rtp_port_range) for c in fixed] == [(24000, 100), (24100, 100)]


async def test_sip_call_has_two_way_audio_while_the_old_fixed_rtp_ports_are_held(tmp_path: Path) -> None:
    """Another rtsip (or anything) on 20000, 22000 and 30000: the ingress and the softphone choose
    other ranges, and a call still carries audio both ways."""
    with holding_udp(20000, 20001, 22000, 22001, 30000, 30001) as held:
        sip = SipOptions(tmp_path / "mock", port=0, workers=2)
        async with running_mock(MockConfig(script=SCRIPT, ring_timeout_s=10), sip=sip) as mock:
            assert mock.sip is not None
            receiver = Receiver(secret=mock.server.config.webhook_secret or "")
            await receiver.start()
            mock.server.config = mock.server.config.model_copy(update={"webhook_url": receiver.url})
            app = receiver.app = App(mock, action="hangup")
            try:
                async with Softphone(ca=mock.sip.certs.ca, state_dir=tmp_path / "phone") as phone:
                    for cfg in [*mock.sip.pool.configs, *phone.pool.configs]:
                        rtp = range(cfg.rtp_port, cfg.rtp_port + cfg.rtp_port_range)
                        assert not set(held) & set(rtp), (cfg.name, rtp)
                    call = await phone.call(mock.sip.uri(), audio=[CALLER.path])
                    assert await call.answered(timeout=15)
                    await call.ended(timeout=40)
                    await asyncio.wait_for(app.closed.wait(), 10)
            finally:
                await receiver.stop()
    # the mock heard the caller (its scripted transcript) and the caller heard the reply
    done = app.of("conversation.item.input_audio_transcription.completed")
    assert done and done[0].transcript == CALLER.text
    assert call.recording is not None
    corr = windowed_correlation(REPLY.pcm(8000), audio.load_audio(call.recording, 8000), 8000)
    assert corr.scores and corr.median >= 0.9, corr


async def test_sip_ingress_starts_on_a_port_left_in_time_wait(tmp_path: Path) -> None:
    """Restarting the mock on the same --sip-port right after a run: the old connections' TIME_WAIT
    is no reason to refuse (pjsip binds with SO_REUSEADDR)."""
    base = free_range(2, kinds=TCP_UDP)  # TCP and UDP on base, TLS on base + 1
    tls = time_wait_port(base + 1)
    assert plain_bind_fails(tls)
    async with running_mock(sip=SipOptions(tmp_path / "mock", port=tls)) as mock:
        assert mock.sip is not None and f"127.0.0.1:{tls};" in mock.sip.uri()


async def test_running_mock_reports_a_taken_port_with_its_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse) as http:
            async with running_mock(port=port):
                pass
        with pytest.raises(PortInUse) as sip:
            async with running_mock(sip=SipOptions(tmp_path / "mock", port=port)):
                pass
    assert (http.value.port, http.value.setting) == (port, "port")
    assert (sip.value.port, sip.value.setting) == (port, "sip_port")


# ---- rtsip mock -----------------------------------------------------------------------------------------


def rtsip_mock(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RTSIP_STATE_DIR": str(tmp_path / "state")}
    return subprocess.run([sys.executable, "-m", "harness.cli", "mock", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_mock_with_its_http_port_taken_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = rtsip_mock(tmp_path, "--port", str(port), "--no-sip")
    assert r.returncode == 2, r.stderr
    [line] = r.stderr.strip().splitlines()
    assert f"127.0.0.1:{port}" in line and "already in use" in line and "--port" in line
    assert "ready" not in r.stdout


def test_mock_with_its_sip_udp_port_taken_names_sip_port(tmp_path: Path) -> None:
    base = free_range(2, kinds=TCP_UDP)
    with holding_udp(base):  # UDP listens one below the TLS port
        r = rtsip_mock(tmp_path, "--port", "0", "--sip-port", str(base + 1))
    assert r.returncode == 2, r.stderr
    [line] = r.stderr.strip().splitlines()
    assert f"UDP port {base}" in line and "--sip-port" in line
