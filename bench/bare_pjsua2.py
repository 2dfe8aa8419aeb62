"""Bare pjsua2 baseline for bench_sip.py: one UAS or UAC process, ≤ 4 TLS calls, looped WAV both ways.

A minimal pjsua2 set-up, plus TCP_NODELAY (docs/architecture.md, 'What the pjsua2 wheel imposes',
item 5): one Endpoint, ``threadCnt=0`` + ``mainThreadOnly`` polled on the main thread, null audio
device, PCMU only, an ``AudioMediaPlayer`` (looping) per call transmitting into the call, no
recorder, no Python frame callbacks.  This is the one place outside ``sipworker/`` that imports
pjsua2: it is the named comparison baseline, not product code.

Control is line-based over stdin/stdout (JSON lines out):

* start-up prints ``{"ready": true, "port": <tls port>}`` (UAS) or, once every call is CONFIRMED,
  ``{"ready": true, "setup_ms": [...], "failed": n}`` (UAC);
* ``stats`` on stdin prints ``{"calls": [{"rx_pkt", "rx_loss", "tx_pkt", "rx_jitter_mean_us"}, ...]}``;
* ``quit`` (or EOF) hangs up, drops every Call before ``libDestroy`` (a live one aborts it) and exits.

    python bench/bare_pjsua2.py uas --cert C --key K --wav W [--rtp-port P]
    python bench/bare_pjsua2.py uac --ca CA --target 'sip:proj_x@127.0.0.1:P;transport=tls' --calls 4 --wav W
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import time
from typing import Any, TextIO

import pjsua2 as pj

from sipworker.ports import rtp_base

RTP_SPAN = 100  # RTP ports this process may bind (pjsua's portRange)
_OUT: TextIO = sys.stdout


def out(obj: dict[str, Any]) -> None:
    _OUT.write(json.dumps(obj) + "\n")
    _OUT.flush()


class Call(pj.Call):
    def __init__(self, owner: Bench, acc: pj.Account, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(acc, call_id)
        self.owner = owner
        self.player: pj.AudioMediaPlayer | None = None
        self.t0 = time.monotonic()
        self.setup_ms: float | None = None
        self.media_idx = -1
        self.state = 0

    def onCallState(self, prm: Any) -> None:
        info = self.getInfo()
        self.state = info.state
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED and self.setup_ms is None:
            self.setup_ms = (time.monotonic() - self.t0) * 1000
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.player = None  # the Call itself stays referenced until os._exit (no churn, so no slot reuse here)

    def onCallMediaState(self, prm: Any) -> None:
        info = self.getInfo()
        for mi in info.media:
            if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                self.media_idx = mi.index
                if self.player is None:
                    self.player = pj.AudioMediaPlayer()
                    self.player.createPlayer(self.owner.wav, 0)  # 0 = loop
                    self.player.startTransmit(self.getAudioMedia(mi.index))

    def stats(self) -> dict[str, Any]:
        if self.media_idx < 0:
            return {}
        st = self.getStreamStat(self.media_idx).rtcp
        return {"rx_pkt": int(st.rxStat.pkt), "rx_loss": int(st.rxStat.loss), "tx_pkt": int(st.txStat.pkt),
                "rx_jitter_mean_us": int(st.rxStat.jitterUsec.mean)}


class Account(pj.Account):
    def __init__(self, owner: Bench) -> None:
        super().__init__()
        self.owner = owner

    def onIncomingCall(self, prm: Any) -> None:
        call = Call(self.owner, self, prm.callId)
        self.owner.calls.append(call)  # keep a reference: a dropped incoming Call is freed and answered 603
        op = pj.CallOpParam()
        op.statusCode = 200
        call.answer(op)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.wav: str = args.wav
        self.calls: list[Call] = []
        self.ep = pj.Endpoint()
        self.acc: Account | None = None

    def start(self) -> int:
        a = self.args
        self.ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.logConfig.level = 0
        cfg.logConfig.consoleLevel = 0
        cfg.medConfig.clockRate = 8000
        cfg.medConfig.sndClockRate = 8000
        cfg.medConfig.channelCount = 1
        cfg.medConfig.ecTailLen = 0
        cfg.medConfig.noVad = True
        self.ep.libInit(cfg)
        self.ep.audDevManager().setNullDev()
        for codec in self.ep.codecEnum2():
            self.ep.codecSetPriority(codec.codecId, 0)
        self.ep.codecSetPriority("PCMU/8000/1", 255)
        tcfg = pj.TransportConfig()
        tcfg.port = a.port
        tcfg.boundAddress = "127.0.0.1"
        so = pj.SockOpt()
        so.level = 6  # IPPROTO_TCP
        so.optName = 1  # TCP_NODELAY; setOptValInt, as assigning optVal does nothing
        so.setOptValInt(1)
        tcfg.tlsConfig.sockOptParams.sockOpts.append(so)
        tcfg.tlsConfig.method = pj.PJSIP_TLSV1_2_METHOD
        if a.role == "uas":
            tcfg.tlsConfig.certFile = a.cert
            tcfg.tlsConfig.privKeyFile = a.key
        else:
            tcfg.tlsConfig.CaListFile = a.ca
            tcfg.tlsConfig.verifyServer = True
        tid = self.ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tcfg)
        port = int(str(self.ep.transportGetInfo(tid).localName).rsplit(":", 1)[1])
        self.ep.libStart()
        acfg = pj.AccountConfig()
        acfg.idUri = f"sip:{'proj_bench' if a.role == 'uas' else 'bare'}@127.0.0.1:{port};transport=tls"
        acfg.mediaConfig.transportConfig.port = a.rtp_port if a.rtp_port is not None else rtp_base(1, RTP_SPAN)
        acfg.mediaConfig.transportConfig.portRange = RTP_SPAN
        acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
        self.acc = Account(self)
        self.acc.create(acfg, True)
        return port

    def poll(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.ep.libHandleEvents(10)

    def dial(self, target: str) -> None:
        call = Call(self, self.acc)
        self.calls.append(call)  # keep a reference (a dropped one is torn down); none may outlive libDestroy
        call.t0 = time.monotonic()
        call.makeCall(target, pj.CallOpParam(True))

    def run(self) -> None:
        a = self.args
        port = self.start()
        if a.role == "uas":
            out({"ready": True, "port": port})
        else:
            for _ in range(a.calls):
                self.dial(a.target)
                self.poll(0.02)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and any(c.setup_ms is None for c in self.calls):
                self.ep.libHandleEvents(10)
            setups = [round(c.setup_ms, 1) for c in self.calls if c.setup_ms is not None]
            out({"ready": True, "setup_ms": setups, "failed": a.calls - len(setups)})
        while True:
            self.ep.libHandleEvents(10)
            ready, _, _ = select.select([sys.stdin], [], [], 0)
            if not ready:
                continue
            line = sys.stdin.readline()
            cmd = line.strip()
            if cmd == "stats":
                rows = []
                for c in self.calls:
                    if c.state != pj.PJSIP_INV_STATE_CONFIRMED:
                        continue
                    try:
                        rows.append(c.stats())
                    except pj.Error:
                        rows.append({})
                out({"calls": rows})
            elif cmd == "quit" or not line:
                break
        self.stop()

    def stop(self) -> None:
        self.ep.hangupAllCalls()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(
                c.state != pj.PJSIP_INV_STATE_DISCONNECTED and c.setup_ms is not None for c in self.calls):
            self.ep.libHandleEvents(10)
        self.poll(0.1)
        for c in self.calls:
            c.player = None
        self.ep.libDestroy()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("role", choices=["uas", "uac"])
    ap.add_argument("--port", type=int, default=0, help="TLS listen port (0 = any)")
    ap.add_argument("--rtp-port", type=int, default=None,
                    help=f"first of {RTP_SPAN} RTP ports (default: a free range, sipworker.ports)")
    ap.add_argument("--wav", required=True, help="8 kHz mono WAV played (looped) into every call")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--ca")
    ap.add_argument("--target", help="UAC: the UAS URI")
    ap.add_argument("--calls", type=int, default=4)
    args = ap.parse_args()
    global _OUT
    _OUT = os.fdopen(os.dup(1), "w")  # JSON lines only; pjlib's own start-up log goes to stderr
    os.dup2(2, 1)
    Bench(args).run()
    _OUT.flush()
    os._exit(0)  # no pj object may be finalised after libDestroy: skip interpreter teardown


if __name__ == "__main__":
    sys.exit(main())
