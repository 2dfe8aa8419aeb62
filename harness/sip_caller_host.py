"""A softphone pool in a process of its own, placing the SIP load calls asked for on stdin, one JSON line
each, and answering each with its record on stdout: the SIP side of Locust's ``SipCaller``.

Why a process: a Locust process is patched by gevent, and the softphone pool is asyncio driving pjsua2
worker subprocesses. Running that loop inside the gevent process (on a thread, under gevent's patched
selectors and sockets) would mix two schedulers in one interpreter; here the pool runs under plain
asyncio, and the Locust side only writes and reads a pipe, which gevent waits on cooperatively.

    python -m harness.sip_caller_host --mock URL --scenario FILE --workers N --state-dir DIR [--ca FILE]

    stdin:  {"id": 7, "index": 12, "worker": 1, "uri": "sips:...", "number": "+12125550123"}
    stdout: {"ready": true} once the pool is up, then {"id": 7, "record": {...}} as each call ends

``worker``/``uri`` are the ingress worker the master chose (:class:`harness.load_sip.IngressSlots`); the
record is :meth:`harness.load_metrics.CallRecord.to_json`. End of stdin: the calls in flight finish, the
pool closes, the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from mock_api.client import TOKEN_ENV

from .load_sip import SipDialer, _Control, load_phone
from .scenario import load_scenario


def _say(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def serve(args: argparse.Namespace, log: Any) -> int:
    scenario = load_scenario(args.scenario)
    spec = scenario.calls[0]
    base = Path(scenario.source or args.scenario).parent.resolve()
    control = _Control(args.mock, os.environ.get(TOKEN_ENV))
    ca = args.ca
    if not ca:
        _status, body = await control.req("GET", "/_mock/sip")
        ca = body.get("ca")
    phone = load_phone(str(ca), args.workers, Path(args.state_dir) / "phone", log)
    dialer = SipDialer(phone, control, spec, base, args.workers, spec.max_duration_s)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()

    async def one(req: dict[str, Any]) -> None:
        rec = await dialer.call(int(req["index"]), int(req["worker"]), str(req["uri"]), str(req["number"]))
        _say({"id": req["id"], "record": rec.to_json()})

    try:
        await phone.start()
        _say({"ready": True})
        while line := await reader.readline():
            task = loop.create_task(one(json.loads(line)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await phone.close()
        await control.close()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--mock", required=True, help="the mock's URL (its control API)")
    ap.add_argument("--scenario", required=True, type=Path)
    ap.add_argument("--workers", type=int, default=1, help="softphone worker processes (4 calls each)")
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--ca", default="", help="the mock's CA file (default: what GET /_mock/sip says)")
    args = ap.parse_args()
    state = Path(args.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    with (state / "softphone.log").open("a") as log:
        return asyncio.run(serve(args, log))


if __name__ == "__main__":
    sys.exit(main())
