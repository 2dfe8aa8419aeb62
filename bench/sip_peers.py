"""The peers bench_sip compares the full stack with: bare pjsua2 process pairs and SIPp.

They bound what the SIP endpoints alone cost on this machine, without rtsip's mock, app or softphone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from bench.sip_machine import CpuWindow, p50, p95
from sipworker.ports import free_range, rtp_base

HERE = Path(__file__).resolve().parent
PY = sys.executable

BARE_RTP_SPAN = 100  # RTP ports per bare_pjsua2.py process (its portRange)


# ---------------------------------------------------------------------------------------------
# bare pjsua2: bench/bare_pjsua2.py UAS/UAC pairs


class Proc:
    """A bare_pjsua2.py process driven over JSON lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def spawn(cls, *args: str, log: Any) -> Proc:
        p = await asyncio.create_subprocess_exec(PY, str(HERE / "bare_pjsua2.py"), *args, stdin=asyncio.subprocess.PIPE,
                                                 stdout=asyncio.subprocess.PIPE, stderr=log)
        return cls(p)

    async def line(self, timeout: float = 30) -> dict[str, Any]:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not raw:
            raise RuntimeError(f"bare_pjsua2 pid {self.proc.pid} exited (rc {self.proc.returncode})")
        result: dict[str, Any] = json.loads(raw)
        return result

    async def send(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd.encode() + b"\n")
        await self.proc.stdin.drain()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.send("quit")
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def bare_hold(n: int, seconds: float, tmp: Path, wav: Path, certs: Any) -> dict[str, Any]:
    pairs = math.ceil(n / 4)
    log = await asyncio.to_thread(open, tmp / f"bare-{n}.log", "a")
    uas: list[Proc] = []
    uac: list[Proc] = []
    uas_rtp, uac_rtp = rtp_base(pairs, BARE_RTP_SPAN), rtp_base(pairs, BARE_RTP_SPAN)
    try:
        t_start = time.monotonic()
        uas = list(await asyncio.gather(*(Proc.spawn(
            "uas", "--cert", str(certs.cert), "--key", str(certs.key), "--wav", str(wav),
            "--rtp-port", str(uas_rtp + BARE_RTP_SPAN * i), log=log) for i in range(pairs))))
        ports = [int((await u.line())["port"]) for u in uas]
        t0 = time.monotonic()
        uac = list(await asyncio.gather(*(Proc.spawn(
            "uac", "--ca", str(certs.ca), "--target", f"sip:proj_bench@127.0.0.1:{ports[i]};transport=tls",
            "--calls", str(min(4, n - 4 * i)), "--wav", str(wav), "--rtp-port", str(uac_rtp + BARE_RTP_SPAN * i),
            log=log)
            for i in range(pairs))))
        ready = [await c.line(40) for c in uac]
        all_up = time.monotonic() - t0
        setups = [float(x) for r in ready for x in r["setup_ms"]]
        failed = sum(int(r["failed"]) for r in ready)
        await asyncio.sleep(2.0)
        win = CpuWindow([p.proc.pid for p in uas + uac])
        win.start()
        await asyncio.sleep(seconds)
        cpu = win.stop()
        rows: list[dict[str, Any]] = []
        for p in uas + uac:
            await p.send("stats")
        for p in uas + uac:
            rows.extend((await p.line())["calls"])
    finally:
        await asyncio.gather(*(p.close() for p in uas + uac))
        log.close()
    loss = sum(int(r.get("rx_loss", 0)) for r in rows)
    two_way = sum(1 for r in rows if r.get("rx_pkt", 0) > 0 and r.get("tx_pkt", 0) > 0)
    return {
        "stack": "bare", "concurrent_calls": n, "processes": 2 * pairs, "confirmed": len(setups), "failed": failed,
        "rtp_both_ways": two_way // 2 if two_way else 0, "rtp_loss": loss,
        "max_mean_jitter_ms": round(max((r.get("rx_jitter_mean_us", 0) for r in rows), default=0) / 1000, 2),
        "setup_p50_ms": p50(setups), "setup_p95_ms": p95(setups), "all_up_s": round(all_up, 2),
        "start_s": round(t0 - t_start, 1),
        "ok": failed == 0 and len(setups) == n and loss == 0 and two_way == 2 * n,
        **{k: v for k, v in cpu.items() if k != "per_pid"},
        "cpu_per_call_pct_of_core": round(cpu["cpu_sum_pct_of_core"] / n, 3),
    }


# ---------------------------------------------------------------------------------------------
# SIPp (Debian sip-tester) over TCP


async def _sipp(args: list[str], cwd: Path, log: Path) -> asyncio.subprocess.Process:
    with await asyncio.to_thread(open, log, "w") as f:
        return await asyncio.create_subprocess_exec("sipp", *args, cwd=cwd, stdout=f, stderr=asyncio.subprocess.STDOUT,
                                                    stdin=asyncio.subprocess.DEVNULL)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def _sipp_counts(text: str) -> tuple[int, int]:
    def last(label: str) -> int:
        found = re.findall(label + r"\s*\|\s*\d+\s*\|\s*(\d+)", text)
        return int(found[-1]) if found else 0

    return last("Successful call"), last("Failed call")


def sipp_ports() -> int:
    """SIPp's SIP ports, P for the UAS and P + 1 for the UAC, free for TCP and UDP (-t t1/tn/u1)."""
    return free_range(2, kinds=(socket.SOCK_STREAM, socket.SOCK_DGRAM))


def sipp_media_ports(calls: int) -> int:
    """A UAC's ``-mp``: its call k sends from -mp + 4 (k - 1) (SIPp's [auto_media_port], modulo 10000),
    RTP and RTCP for audio and video."""
    return free_range(4 * min(calls, 2500) + 4)


async def sipp_hold(n: int, seconds: float, tmp: Path, transport: str, ramp_cps: float = 100.0) -> dict[str, Any]:
    port = sipp_ports()
    d = tmp / f"sipp-hold{n}"
    d.mkdir(exist_ok=True)
    shutil.copy(tmp / "sipp_ulaw.wav", d / "sipp_ulaw.wav")
    ramp = n / ramp_cps
    hold_ms = int((ramp + 2 + seconds + 1) * 1000)
    uas = await _sipp(["-sn", "uas", "-t", transport, "-i", "127.0.0.1", "-p", str(port), "-rtp_echo", "-mi",
                       "127.0.0.1", "-mp", str(free_range(4)), "-nostdin"], d, d / "uas.log")
    await asyncio.sleep(0.5)
    uac = await _sipp(["127.0.0.1:" + str(port), "-sf", str(HERE / "sipp" / "uac_rtp.xml"), "-t", transport, "-i",
                       "127.0.0.1", "-p", str(port + 1), "-mi", "127.0.0.1", "-mp", str(sipp_media_ports(n)),
                       "-r", str(ramp_cps),
                       "-l", str(n), "-m", str(n), "-d", str(hold_ms), "-nostdin", "-trace_rtt", "-rtt_freq", "1"],
                      d, d / "uac.log")
    await asyncio.sleep(ramp + 2)
    win = CpuWindow([uas.pid, uac.pid])
    win.start()
    await asyncio.sleep(seconds)
    cpu = win.stop()
    try:
        rc = await asyncio.wait_for(uac.wait(), hold_ms / 1000 + 30)
    except TimeoutError:
        await _stop(uac)
        rc = -1
    await _stop(uas)
    ok_calls, failed = _sipp_counts((d / "uac.log").read_text(errors="replace"))
    echoed = re.findall(r"(\d+)\s+Total echo RTP pckts 1st stream", (d / "uas.log").read_text(errors="replace"))
    echo = int(echoed[-1]) if echoed else 0
    expected = int(n * hold_ms / 1000 * 50)
    setups = _rtt(d)
    return {
        "stack": "sipp", "transport": transport, "concurrent_calls": n, "processes": 2, "confirmed": ok_calls,
        "failed": failed + (n - ok_calls - failed), "rc": rc, "rtp_echoed_pkts": echo,
        "rtp_expected_pkts": expected, "rtp_loss": None,
        "setup_p50_ms": p50(setups), "setup_p95_ms": p95(setups),
        "ok": rc == 0 and ok_calls == n and echo >= 0.97 * expected,
        **{k: v for k, v in cpu.items() if k != "per_pid"},
        "cpu_per_call_pct_of_core": round(cpu["cpu_sum_pct_of_core"] / n, 3),
    }


def _rtt(d: Path) -> list[float]:
    out: list[float] = []
    for f in d.glob("*_rtt.csv"):
        for line in f.read_text().splitlines():
            parts = line.split(";")
            if len(parts) >= 2 and parts[1].replace(".", "", 1).isdigit():
                out.append(float(parts[1]))
    return out


async def sipp_rate(cps: float, total: int, tmp: Path, transport: str) -> dict[str, Any]:
    port = sipp_ports()
    d = tmp / "sipp-rate"
    d.mkdir(exist_ok=True)
    uas = await _sipp(["-sn", "uas", "-t", transport, "-i", "127.0.0.1", "-p", str(port), "-nostdin"], d,
                      d / "uas.log")
    await asyncio.sleep(0.5)
    t0 = time.monotonic()
    uac = await _sipp(["127.0.0.1:" + str(port), "-sn", "uac", "-t", transport, "-i", "127.0.0.1", "-p",
                       str(port + 1), "-r", str(cps), "-m", str(total), "-nostdin", "-trace_rtt", "-rtt_freq", "1"],
                      d, d / "uac.log")
    win = CpuWindow([uas.pid, uac.pid])
    win.start()
    try:
        rc = await asyncio.wait_for(uac.wait(), total / cps + 60)
    except TimeoutError:
        await _stop(uac)
        rc = -1
    wall = time.monotonic() - t0
    cpu = win.stop()
    await _stop(uas)
    ok_calls, failed = _sipp_counts((d / "uac.log").read_text(errors="replace"))
    setups = _rtt(d)
    return {"stack": "sipp", "transport": transport, "placed": total, "confirmed": ok_calls, "failed": failed,
            "rc": rc, "target_cps": cps, "cps_achieved": round(ok_calls / wall, 1),
            "setup_p50_ms": p50(setups), "setup_p95_ms": p95(setups), "setup_resolution_ms": 1,
            **{k: v for k, v in cpu.items() if k != "per_pid"}}
