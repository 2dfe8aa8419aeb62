"""``rtsip call``: place one real SIP call from the softphone and report what happened.

Thin shell over :class:`harness.softphone.Softphone`: prints SIP progress as it happens, then the
final status, the REFER target and the time to first audio.  Exit status 0 iff the call was
answered (2xx), so it works in shell scripts and CI smoke checks.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from harness.commands import CommandError, UsageError, checks, header_arg
from sipworker.ipc import Ev, Event

EPILOG = """examples:
  rtsip call 'sip:proj_test@127.0.0.1:5061;transport=tls' --audio claim.wav --header X-Test-Id:t1
  rtsip call 'sip:proj_test@127.0.0.1:5061;transport=tls' --insecure --dtmf 12# --hangup-after 5
  rtsip call 'sip:proj_test@127.0.0.1:5061;transport=tls' --from sip:+14155550123@carrier.example \\
      --display-name 'Alice Smith' --to tel:+18005550199

The caller's identity: --from and --display-name make the INVITE's From
("Alice Smith" <sip:+14155550123@carrier.example>;tag=...), --to its To; the INVITE still goes
to URI (its Request-URI).  A SIP From or To must be a SIP URI, so a tel: number is sent as
sip:<number>@<host of URI>;user=phone (tel:+18005550199 above: sip:+18005550199@127.0.0.1;user=phone).

By default the server certificate is verified against <state dir>/tls/ca.pem (what `rtsip mock`
generates and prints); --ca names another CA, --insecure skips verification.
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "call",
        help="place one SIP call from the softphone (exit 0 iff answered)",
        description=__doc__.splitlines()[0] if __doc__ else None,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("uri", help="SIP URI, e.g. 'sip:proj_x@127.0.0.1:5061;transport=tls'")
    p.add_argument("--audio", nargs="+", default=[], metavar="FILE", help="audio to play once answered, in order")
    p.add_argument("--codec", default="PCMU,PCMA", metavar="LIST",
                   help="codecs to offer, most preferred first (default PCMU,PCMA; e.g. opus,PCMU for GPT-Live)")
    p.add_argument("--record", metavar="OUT.wav", help="write what the caller heard to this WAV (8 kHz mono)")
    p.add_argument("--header", action="append", type=header_arg, default=[], metavar="K:V", help="extra INVITE header")
    p.add_argument("--dtmf", metavar="DIGITS", help="send these DTMF digits (RFC 2833) once answered")
    p.add_argument("--from", dest="from_uri", metavar="URI",
                   help="the caller, in the INVITE's From: sip:, sips: or tel: (tel: is sent as "
                        "sip:<number>@<host of URI>;user=phone; default sip:softphone@127.0.0.1)")
    p.add_argument("--display-name", metavar="NAME", help='the caller\'s name in the From ("NAME" <URI>)')
    p.add_argument("--to", dest="to_uri", metavar="URI",
                   help="the INVITE's To: sip:, sips: or tel: (mapped as --from; default URI itself)")
    tls = p.add_mutually_exclusive_group()
    tls.add_argument("--ca", metavar="PEM", help="CA to verify the server with (default: <state dir>/tls/ca.pem)")
    tls.add_argument("--insecure", action="store_true", help="do not verify the server certificate")
    p.add_argument(
        "--hangup-after",
        type=float,
        metavar="S",
        help="hang up S seconds after the answer (default: when the audio has played, or 5 s without audio)",
    )
    p.add_argument("--answer-timeout", type=float, default=30.0, metavar="S", help="give up (CANCEL) after S s")
    p.add_argument("--state-dir", default=None, help="state directory (env RTSIP_STATE_DIR)")
    p.add_argument("-v", "--verbose", action="store_true", help="show the SIP worker's pjsip log on stderr")
    p.set_defaults(func=cmd_call)


def _default_ca(state: str | None) -> Path:
    from mock_api.state import state_path

    return state_path(state) / "tls" / "ca.pem"


def check(args: argparse.Namespace) -> None:
    """Every value that can be wrong, checked before a SIP worker starts (UsageError says which)."""
    checks.sip_uri(args.uri, "URI")
    if args.from_uri is not None:
        checks.sip_uri(args.from_uri, "--from", tel=True)
    if args.display_name is not None:
        display_name(args.display_name, "--display-name")
    if args.to_uri is not None:
        checks.sip_uri(args.to_uri, "--to", tel=True)
    for path in args.audio:
        checks.audio_file(path, "--audio")
    args.codecs = checks.codecs(args.codec)
    if args.record:
        checks.output_file(args.record, "--record")
    if args.dtmf is not None:
        checks.dtmf(args.dtmf, "--dtmf")
    if args.hangup_after is not None:
        checks.seconds_or_zero(args.hangup_after, "--hangup-after")
    checks.positive_seconds(args.answer_timeout, "--answer-timeout")
    if args.ca:
        checks.readable_file(args.ca, "--ca")
    elif not args.insecure and not _default_ca(args.state_dir).is_file():
        raise UsageError(f"CA file {_default_ca(args.state_dir)} not found (start `rtsip mock` once, "
                         "or pass --ca / --insecure)")


def display_name(value: str, flag: str) -> str:
    """``value`` if it can be sent as a From's display name (any text on one line)."""
    from sipworker.ipc import name_addr

    try:
        name_addr("sip:x@127.0.0.1", value)
    except ValueError as exc:
        raise UsageError(f"{flag} {value!r}: contains control characters (a line break, a tab); expected a name on "
                         "one line, e.g. 'Alice Smith'") from exc
    return value


def _progress(start: float) -> Any:
    def show(call: Any, ev: Event) -> None:
        t = f"{(time.monotonic() - start) * 1000:7.0f} ms"
        d = ev.data
        if ev.kind == Ev.CALL_STATE:
            code = f" {d.get('code')} {d.get('reason')}" if d.get("code") else ""
            print(f"{t}  {d.get('state')}{code}", flush=True)
        elif ev.kind == Ev.MEDIA_ACTIVE:
            print(f"{t}  media {d.get('codec')}/{d.get('clock_rate')}{' SRTP' if d.get('srtp') else ''}", flush=True)
        elif ev.kind == Ev.FIRST_AUDIO:
            print(f"{t}  first audio heard", flush=True)
        elif ev.kind == Ev.REFER_RECEIVED:
            print(f"{t}  REFER to {d.get('target')}", flush=True)
        elif ev.kind == Ev.DTMF:
            print(f"{t}  DTMF received {d.get('digit')}", flush=True)
        elif ev.kind == Ev.CALL_FAILED:
            print(f"{t}  SIP worker died: {d.get('reason')}", flush=True)

    return show


async def _run(args: argparse.Namespace) -> int:
    from harness.softphone import Softphone

    ca = None if args.insecure else (args.ca or str(_default_ca(args.state_dir)))
    start = time.monotonic()
    log = None if args.verbose else asyncio.subprocess.DEVNULL
    async with Softphone(
        ca=ca, insecure=args.insecure, record=bool(args.record), stderr=log, log_level=4 if args.verbose else 1,
        codecs=args.codecs,
    ) as phone:
        call = await phone.call(
            args.uri,
            headers=dict(args.header),
            audio=args.audio,
            record=args.record or False,  # the phone makes a relative path absolute
            on_progress=_progress(start),
            from_uri=args.from_uri,
            display_name=args.display_name,
            to_uri=args.to_uri,
        )
        try:
            answered = await call.answered(args.answer_timeout)
        except TimeoutError:
            print(f"no answer within {args.answer_timeout:g} s; cancelling", flush=True)
            await call.hangup()
            answered = False
        if answered:
            if args.dtmf:
                await call.send_dtmf(args.dtmf)
            limit = args.hangup_after
            if limit is None and args.audio:
                try:
                    await call.wait_event(Ev.PLAYBACK_DONE.value, 600)
                    limit = 0.5
                except Exception:
                    limit = 0.0  # the call ended while playing
            try:
                await call.ended(5.0 if limit is None else limit)
            except TimeoutError:
                await call.hangup()
        with_timeout = call.ended(10)
        await with_timeout
    print(f"final status: {call.final_status} {call.final_reason}".rstrip())
    if call.was_answered:
        print(f"ended by: {call.ended_by} ({call.end_code} {call.end_reason})")
    print(f"REFER target: {call.refer_target or '-'}")
    ttfa = call.time_to_first_audio_ms
    print(f"time to first audio: {f'{ttfa} ms after answer' if ttfa is not None else '-'}")
    if call.marks:
        print(
            "marks (ms since INVITE): "
            + ", ".join(f"{k}={v}" for k, v in sorted(call.marks.items(), key=lambda kv: kv[1]))
        )
    if args.record and call.recording:
        print(f"recording: {call.recording}")
    return 0 if call.was_answered else 1


def cmd_call(args: argparse.Namespace) -> int:
    from sipworker import sip_available, sip_missing
    from sipworker.supervisor import WorkerError

    check(args)  # a typo is reported the same everywhere
    if not sip_available():  # before any worker: it would die on `import pjsua2` deep in its pipe
        raise UsageError(sip_missing())
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 130
    except WorkerError as exc:  # pjsip refused something the checks could not foresee
        raise CommandError(f"the SIP worker failed: {exc}") from None
