"""``rtsip answer``: be the far end of a call, a TLS SIP trunk or callee that answers with a fixture and records.

What an outbound GPT-Live call (``POST /v1/live/sessions`` with a SIP transport) dials: it prints its
``sips:`` URL (the ``trunk.provider_url`` to create the session with), challenges every INVITE with digest
auth when given ``--username``/``--password`` (pjsua2 only answers challenges, so the check is
:class:`sipworker.digest.Challenger`'s), rings, answers with the fixture, records what it hears, and
reports each step on stdout, one line each.

Rules:

1. ``--reject CODE`` refuses every call with CODE (a busy trunk: 486); nothing is answered.
2. With credentials an INVITE without valid ones gets 401 ``WWW-Authenticate`` (``--challenge 407``: 407
   ``Proxy-Authenticate``); the caller's retry with the right answer is taken. A wrong answer is challenged
   again, as SIP servers do; the caller's stack gives up after one retry with the same credentials.
3. A taken call rings ``--ring-ms``, is answered, plays the fixture once, records what it hears
   (``--record``; the N-th call beyond the first to ``<stem>-N.wav``) and reports each stretch of speech
   it hears (:data:`HEARING`). It ends when the caller hangs up,
   or ``--hangup-after`` seconds after the answer.
4. The command exits after ``--calls`` calls have ended (default: runs until interrupted).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.commands import UsageError, checks
from sipworker.codecs import G711, wants_opus
from sipworker.digest import Challenger
from sipworker.ipc import Ev, Event, Op, WorkerConfig

EPILOG = """examples:
  rtsip answer --port 0 --fixture audio_fixtures/caller_policy_number.wav --record heard.wav
  rtsip answer --port 5071 --fixture hello.wav --username acct-42 --password s3cret
  rtsip answer --port 0 --fixture hello.wav --reject 486

The certificate is the local CA's (<state dir>/tls, what `rtsip mock` trusts for outbound calls);
create the Live session with "provider_url" set to the printed sips: URL.
"""

Printer = Callable[[str], None]
HEARING = {"enabled": True, "silence_duration_ms": 1500}
"""How the callee finds the speech it hears (reported as ``heard`` lines): pauses within a sentence stay in it."""


@dataclass(frozen=True)
class AnswerOptions:
    fixture: str | None = None  # 8 kHz mono WAV (converted by the caller of Answerer)
    record: str | None = None
    username: str | None = None
    password: str | None = None
    challenge: int = 401
    reject: int | None = None
    ring_ms: int = 200
    hangup_after_s: float | None = None
    srtp: str = "optional"  # disabled: a trunk that does not do SRTP (an offer of RTP/SAVP only gets 488)
    codecs: tuple[str, ...] = G711  # what an answer may pick, most preferred first; "opus" loads the Opus codec


@dataclass
class AnsweredCall:
    """One INVITE the answerer took or refused, and how it ended."""

    ref: str
    data: dict[str, Any]
    outcome: str = ""  # challenged | rejected | answered
    auth: str | None = None  # why the credentials failed ("missing", "wrong password"), None when they passed
    recording: str | None = None
    heard: list[tuple[int, int]] = field(default_factory=list)  # speech the callee heard: (start, end) audio ms
    end: dict[str, Any] = field(default_factory=dict)
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class Answerer:
    """A TLS SIP UAS (one answering SIP worker) that answers calls by :class:`AnswerOptions` (the rules above)."""

    def __init__(self, state_dir: str | Path, options: AnswerOptions, *, port: int = 0, host: str = "127.0.0.1",
                 printer: Printer | None = None, stderr: Any = None) -> None:
        from mock_api.certs import ensure_certs
        from sipworker.supervisor import WorkerPool

        self.options = options
        self.state_dir = Path(state_dir)
        self.certs = ensure_certs(self.state_dir)
        self.host = host
        self._print = printer or (lambda line: print(line, flush=True))
        self.challenger = Challenger(options.username, options.password or "", proxy=options.challenge == 407) \
            if options.username is not None else None
        config = WorkerConfig(name="answer", bind=host, tls_port=port, cert_file=str(self.certs.cert),
                              key_file=str(self.certs.key), ca_file=str(self.certs.ca), srtp=options.srtp,
                              user="answer", user_agent="rtsip-answer", rtp_timeout_s=30.0,
                              codecs=list(options.codecs), opus=wants_opus(options.codecs))
        from sipworker.supervisor import pool_configs

        self.pool = WorkerPool(pool_configs(1, config), on_event=self._on_event, restart=False, stderr=stderr)
        self.calls: list[AnsweredCall] = []
        self._by_ref: dict[str, AnsweredCall] = {}
        self._answered = 0
        self._onsets: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Answerer:
        await self.pool.start()
        worker = self.pool.workers[0]
        chosen = "" if tuple(worker.codecs) == G711 else f" codecs {','.join(worker.codecs)}"
        self._print(f"listening {self.url}{chosen}")  # the URL is the line's second word
        if worker.opus_unavailable:
            self._print(f"opus unavailable: {worker.opus_unavailable}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.pool.stop()

    @property
    def port(self) -> int:
        return int(self.pool.workers[0].ports["tls"])

    @property
    def url(self) -> str:
        """The trunk's ``sips:`` URL, as a create body's ``trunk.provider_url``."""
        return f"sips:{self.host}:{self.port}"

    async def wait_for(self, pred: Callable[[], bool], timeout: float | None = None) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(pred), timeout)

    def finished(self) -> list[AnsweredCall]:
        """Calls that were answered and have ended."""
        return [c for c in self.calls if c.outcome == "answered" and c.ended.is_set()]

    async def _on_event(self, ev: Event) -> None:
        ref = ev.ref
        if ev.kind == Ev.INCOMING_CALL and ref:
            call = AnsweredCall(ref, ev.data)
            self.calls.append(call)
            self._by_ref[ref] = call
            task = asyncio.create_task(self._take(call))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        seen = self._by_ref.get(ref) if ref else None
        if seen is not None:
            if ev.kind == Ev.RECORDING:
                seen.recording = ev.data.get("path")
            elif ev.kind == Ev.SPEECH_STARTED:
                self._onsets[seen.ref] = int(ev.data.get("audio_ms", 0))
            elif ev.kind == Ev.SPEECH_STOPPED and seen.ref in self._onsets:
                seen.heard.append((self._onsets.pop(seen.ref), int(ev.data.get("audio_ms", 0))))
                self._print(f"heard {ref}: speech {seen.heard[-1][0] / 1000:.2f}-{seen.heard[-1][1] / 1000:.2f} s")
            elif ev.kind in (Ev.CALL_ENDED, Ev.CALL_FAILED):
                seen.end = dict(ev.data, kind=ev.kind)
                if seen.outcome == "answered":
                    self._print(f"ended {ref}: {ev.data.get('end_code')} {ev.data.get('end_reason', '')} "
                                f"by {ev.data.get('by')}" + (f", recording {seen.recording}" if seen.recording else ""))
                seen.ended.set()
        async with self._changed:
            self._changed.notify_all()

    async def _take(self, call: AnsweredCall) -> None:
        """One INVITE by the module's rules 1–3."""
        opts = self.options
        d = call.data
        self._print(f"incoming {call.ref} from {d.get('from')} to {d.get('request_uri')}")
        try:
            if opts.reject is not None:
                call.outcome = "rejected"
                await self.pool.call_command(call.ref, Op.REJECT, code=opts.reject)
                self._print(f"rejected {call.ref} with {opts.reject}")
                return
            if self.challenger is not None:
                headers = [(str(k), str(v)) for k, v in d.get("headers", [])]
                call.auth = self.challenger.check("INVITE", headers)
                if call.auth is not None:
                    call.outcome = "challenged"
                    await self.pool.call_command(call.ref, Op.REJECT, code=self.challenger.status,
                                                 headers=self.challenger.challenge())
                    self._print(f"challenged {call.ref} with {self.challenger.status} ({call.auth})")
                    return
                self._print(f"authenticated {call.ref} as {self.challenger.username}")
            call.outcome = "answered"
            self._answered += 1
            await self.pool.call_command(call.ref, Op.RINGING, code=180)
            if opts.ring_ms:
                await asyncio.sleep(opts.ring_ms / 1000)  # the trunk's ringing, a product setting
            args: dict[str, Any] = {"play": [opts.fixture] if opts.fixture else [], "vad": HEARING}
            record = self._record_path(self._answered)
            if record is not None:
                args["record"] = record
            await self.pool.call_command(call.ref, Op.ANSWER, **args)
            self._print(f"answered {call.ref}")
            if opts.hangup_after_s is not None:
                await asyncio.sleep(opts.hangup_after_s)
                with contextlib.suppress(KeyError, Exception):
                    await self.pool.call_command(call.ref, Op.HANGUP)
        except Exception as exc:  # the caller went away meanwhile: the call's end is reported anyway
            self._print(f"{call.ref}: {type(exc).__name__}: {exc}")

    def _record_path(self, n: int) -> str | None:
        rec = self.options.record
        if rec is None:
            return None
        path = Path(rec).absolute()
        return str(path if n == 1 else path.with_name(f"{path.stem}-{n}{path.suffix}"))


# ---- the command line -----------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "answer", help="answer SIP/TLS calls with a fixture and record them (a trunk for outbound Live calls)",
        description="Be the far end of a call: a TLS SIP trunk or callee that answers with a fixture and records.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    # values are checked by check(), not argparse: a mistake is one line (argparse prints its usage too)
    p.add_argument("--port", metavar="N", help="TLS SIP port (0: any free port); required")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--fixture", metavar="F", help="audio to play once a call is answered; required")
    p.add_argument("--record", metavar="OUT.wav", help="write what the callee heard to this WAV (8 kHz mono)")
    p.add_argument("--username", help="digest username callers must authenticate with (with --password)")
    p.add_argument("--password", help="digest password (with --username)")
    p.add_argument("--challenge", default="401", metavar="401|407",
                   help="challenge with 401 WWW-Authenticate (default) or 407 Proxy-Authenticate")
    p.add_argument("--reject", metavar="CODE", help="refuse every call with this SIP status (400-699)")
    p.add_argument("--srtp", default="optional", metavar="disabled|optional|mandatory",
                   help="SRTP on the media (default optional: SDES-SRTP when offered)")
    p.add_argument("--codec", default="PCMU,PCMA", metavar="LIST",
                   help="codecs an answer may pick, most preferred first (default PCMU,PCMA; e.g. opus,PCMU)")
    p.add_argument("--ring-ms", default="200", metavar="MS", help="ring this long before answering (default 200)")
    p.add_argument("--hangup-after", metavar="S", help="hang up S seconds after the answer")
    p.add_argument("--calls", metavar="N", help="exit after N answered calls have ended")
    p.add_argument("--state-dir", default=None, help="state directory with the local CA (env RTSIP_STATE_DIR)")
    p.add_argument("-v", "--verbose", action="store_true", help="show the SIP worker's pjsip log on stderr")
    p.set_defaults(func=cmd_answer)


def _number(value: str | None, flag: str, kind: type[int] | type[float] = int) -> Any:
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        raise UsageError(f"{flag} {value!r}: expected {'a whole number' if kind is int else 'a number'}") from None


def check(args: argparse.Namespace) -> None:
    """Every flag that can be wrong, before a SIP worker starts (UsageError: one line, exit 2); the numbers are
    converted here."""
    for flag, value in (("--port", args.port), ("--fixture", args.fixture)):
        if value is None:
            raise UsageError(f"{flag} is required")
    args.port = checks.port(_number(args.port, "--port"), "--port", lowest=0)
    args.challenge = _number(args.challenge, "--challenge")
    args.reject = _number(args.reject, "--reject")
    args.ring_ms = _number(args.ring_ms, "--ring-ms")
    args.hangup_after = _number(args.hangup_after, "--hangup-after", float)
    args.calls = _number(args.calls, "--calls")
    if args.srtp not in ("disabled", "optional", "mandatory"):
        raise UsageError(f"--srtp must be disabled, optional or mandatory, not {args.srtp!r}")
    if args.challenge not in (401, 407):
        raise UsageError(f"--challenge must be 401 or 407, not {args.challenge}")
    checks.audio_file(args.fixture, "--fixture")
    args.codecs = checks.codecs(args.codec)
    if args.record:
        checks.output_file(args.record, "--record")
    if (args.username is None) != (args.password is None):
        raise UsageError("--username and --password go together")
    if args.username is not None and not args.username.strip():
        raise UsageError("--username must have a non-space character")
    if args.reject is not None and not 400 <= args.reject <= 699:
        raise UsageError(f"--reject must be a SIP final status from 400 to 699, not {args.reject}")
    if args.reject is not None and args.username is not None:
        raise UsageError("--reject refuses every call: it takes no --username/--password")
    if args.ring_ms < 0:
        raise UsageError(f"--ring-ms must be at least 0, not {args.ring_ms}")
    if args.hangup_after is not None:
        checks.positive_seconds(args.hangup_after, "--hangup-after")
    if args.calls is not None:
        checks.at_least(args.calls, 1, "--calls")


def cmd_answer(args: argparse.Namespace) -> int:
    from sipworker import sip_available, sip_missing

    check(args)
    if not sip_available():
        raise UsageError(sip_missing())
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 130


async def _run(args: argparse.Namespace) -> int:
    from harness.softphone import prepare_audio
    from mock_api.state import state_path

    state = state_path(args.state_dir)
    with tempfile.TemporaryDirectory(prefix="rtsip-answer-") as tmp:
        wav = prepare_audio(args.fixture, Path(tmp))
        opts = AnswerOptions(fixture=wav, record=args.record, username=args.username, password=args.password,
                             challenge=args.challenge, reject=args.reject, ring_ms=args.ring_ms,
                             hangup_after_s=args.hangup_after, srtp=args.srtp, codecs=args.codecs)
        stderr = None if args.verbose else subprocess.DEVNULL
        async with Answerer(state, opts, port=args.port, host=args.host, stderr=stderr) as answerer:
            await answerer.wait_for(lambda: args.calls is not None and len(answerer.finished()) >= args.calls)
    sys.stdout.flush()
    return 0
