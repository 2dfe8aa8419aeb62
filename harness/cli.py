"""``rtsip``: the command line. Each command is a thin shell over a public API."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from harness.commands import CommandError, UsageError, checks, header_arg
from harness.commands import answer as answer_cmd
from harness.commands import call as call_cmd
from harness.commands import env as env_cmd
from harness.commands import load as load_cmd
from harness.commands import shards as shards_cmd

JOURNAL_FILE = "journal.jsonl"
STATE_DIR_HELP = "state directory (default $XDG_STATE_HOME/rtsip or ~/.local/state/rtsip)"
ENV_HELP = f"""environment:
  OPENAI_WEBHOOK_SECRET  webhook signing secret (whsec_...): rtsip mock --webhook-secret, rtsip trigger --secret
  RTSIP_WEBHOOK_URL      webhook target: rtsip mock --webhook-url
  RTSIP_STATE_DIR        {STATE_DIR_HELP}
"""
MOCK_ENV_HELP = f"""environment:
  OPENAI_WEBHOOK_SECRET  webhook signing secret (whsec_...), used when --webhook-secret is not given
  RTSIP_WEBHOOK_URL      webhook target, used when --webhook-url is not given
  RTSIP_STATE_DIR        {STATE_DIR_HELP}

files in the state directory:
  journal.jsonl          timelines the journal lets go (retention, oldest entries, shutdown), one JSON line each
  running.json           where this mock listens, its control token and what an app needs (`rtsip env`)
"""
TRIGGER_ENV_HELP = f"""environment:
  OPENAI_WEBHOOK_SECRET  webhook signing secret (whsec_...), used when --secret is not given
  RTSIP_STATE_DIR        {STATE_DIR_HELP}; without --secret or
                         OPENAI_WEBHOOK_SECRET, the secret `rtsip mock` keeps there is used
"""


def _add_mock(sub: Any) -> None:
    p = sub.add_parser(
        "mock", help="run the fake OpenAI Realtime/SIP control plane until Ctrl-C",
        description="Run the fake OpenAI server: signed webhooks, REST call controls, the /_mock/ control API. "
                    "Prints one ready line with the base URL and the webhook secret, then serves until Ctrl-C "
                    "or SIGTERM, which stop it within 2 s: every WebSocket is closed with 1001 \"going away\", "
                    "every SIP call gets its BYE. A second Ctrl-C or SIGTERM stops it at once.",
        epilog=MOCK_ENV_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="HTTP/WebSocket port (default 8765; 0 picks a free one)")
    p.add_argument("--webhook-url", default=os.environ.get("RTSIP_WEBHOOK_URL"),
                   help="where realtime.call.incoming is POSTed (env RTSIP_WEBHOOK_URL)")
    p.add_argument("--webhook-secret", default=os.environ.get("OPENAI_WEBHOOK_SECRET"),
                   help="whsec_ signing secret (env OPENAI_WEBHOOK_SECRET; default: generated once and kept "
                        "in the state directory)")
    p.add_argument("--state-dir", default=None, help="state directory (env RTSIP_STATE_DIR)")
    p.add_argument("--config", type=Path, help="YAML or JSON file with mock settings (see /_mock/config)")
    p.add_argument("--fault", action="append", default=[], metavar="NAME",
                   help="activate a named fault for every call (repeatable; list: GET /_mock/faults)")
    p.add_argument("--strict-accept", action="store_true",
                   help="answer an invalid accept body with 400 instead of the real 200-then-fail")
    p.add_argument("--legacy-beta", action="store_true",
                   help="serve OpenAI-Beta: realtime=v1 sockets instead of closing them with 4000")
    p.add_argument("--ring-timeout", type=float, default=None, metavar="S",
                   help="fail calls nobody accepts within S seconds (default 30)")
    p.add_argument("--sip-port", type=int, default=5061, metavar="PORT",
                   help="SIP/TLS port (default 5061); TCP and UDP listen one below (5060); 0 picks free ports")
    p.add_argument("--sip-workers", type=int, default=1, metavar="N",
                   help="SIP worker processes, 4 calls each (default 1)")
    p.add_argument("--no-sip", action="store_true",
                   help="do not start the SIP ingress (HTTP and WebSocket only; without pjsua2 this is the default, "
                        "with a warning)")
    p.add_argument("--record", action="store_true",
                   help="keep audio bytes in the journal (default: their size and a checksum) and record what each "
                        "SIP caller sent, in the state directory")
    p.add_argument("--control-token", default=None, metavar="TOKEN",
                   help="require TOKEN on /_mock/ requests (X-Rtsip-Token or Authorization: Bearer), kept in "
                        "running.json for clients of this state directory")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="also answer requests whose Host is NAME (repeatable; default: loopback names and --host)")
    p.add_argument("--sip-media", choices=["native", "python"], default="native",
                   help="how call audio reaches Python in the SIP workers: native (default; C frame ports, "
                        "Python takes received audio in batches) or python (pjsua2 frame ports, a Python "
                        "callback per frame; the fallback when the C module is missing)")
    p.add_argument("--sip-frame-ms", type=int, default=60, metavar="MS",
                   help="a multiple of 20 in 20..200 (default 60): received audio of calls without VAD is "
                        "taken every MS; with --sip-media python, also the audio per callback, so reply "
                        "audio starts up to MS later")
    p.add_argument("--sip-vad-frame-ms", type=int, default=20, metavar="MS",
                   help="received audio of calls with VAD is taken every MS, 20..--sip-frame-ms (default 20): "
                        "larger costs less CPU and delays speech_started/stopped by up to MS")
    p.add_argument("--intercept", action="store_true",
                   help="also run the HTTPS interception proxy, so apps that hard-code https://api.openai.com "
                        "and wss://api.openai.com reach the mock unmodified (their environment: `rtsip env`)")
    p.add_argument("--proxy-port", type=int, default=8766, metavar="PORT",
                   help="the interception proxy's port with --intercept (default 8766; 0 picks a free one)")
    p.add_argument("--tls-port", type=int, default=None, metavar="PORT",
                   help="also serve the API over HTTPS/WSS on PORT (0 picks a free one), with a certificate from "
                        "the local CA (ca.pem in the state directory): what AzureOpenAI apps need, whose socket is "
                        "always wss:// (docs/azure.md)")
    p.add_argument("--stall-watch", type=int, default=None, metavar="MS",
                   help="journal every event-loop stall longer than MS with the stack the loop was in "
                        "(mock.stall on the server timeline; off by default)")
    p.add_argument("--shard", metavar="I/N", default=None,
                   help="run as shard I of N behind a proxy that routes by call id (`rtsip shards`, "
                        "rtsip load --mock-processes): this mock's call ids route back to it")
    p.set_defaults(func=cmd_mock)


def _check_mock(args: argparse.Namespace) -> None:
    """The flags argparse lets through but the mock cannot use, before anything listens."""
    from mock_api.faults import FAULTS, unknown_fault

    checks.port(args.port, "--port")
    checks.port(args.proxy_port, "--proxy-port")
    if args.tls_port is not None:
        checks.port(args.tls_port, "--tls-port")
    checks.port(args.sip_port, "--sip-port", lowest=2)  # TCP and UDP listen one below it
    checks.at_least(args.sip_workers, 1, "--sip-workers")
    if args.stall_watch is not None:
        checks.at_least(args.stall_watch, 1, "--stall-watch")
    _check_frames(args.sip_frame_ms, args.sip_vad_frame_ms)
    if args.ring_timeout is not None:
        checks.positive_seconds(args.ring_timeout, "--ring-timeout")
    if args.webhook_url:
        checks.http_url(args.webhook_url, "--webhook-url (or RTSIP_WEBHOOK_URL)")
    if args.webhook_secret:  # an empty OPENAI_WEBHOOK_SECRET counts as unset
        checks.webhook_secret(args.webhook_secret, "--webhook-secret (or OPENAI_WEBHOOK_SECRET)")
    for name in args.fault:
        if name not in FAULTS:
            raise UsageError(f"--fault: {unknown_fault(name)}")
    if args.control_token is not None:
        checks.token(args.control_token, "--control-token")


def _check_frames(frame_ms: int, vad_frame_ms: int) -> None:
    """The SIP workers' frame sizes, by the workers' own rule, even with --no-sip (a typo is still one)."""
    from sipworker.ipc import WorkerConfig

    try:
        WorkerConfig(frame_ms=frame_ms, vad_frame_ms=20)  # 20 fits every valid frame_ms
    except ValueError as exc:
        raise UsageError(f"--sip-frame-ms {frame_ms}: {exc}") from None
    try:
        WorkerConfig(frame_ms=frame_ms, vad_frame_ms=vad_frame_ms)
    except ValueError as exc:
        raise UsageError(f"--sip-vad-frame-ms {vad_frame_ms}: {exc}") from None


def _state_dir(path: str | None) -> Path:
    """The state directory, created if needed; a path that cannot be one is a usage error."""
    from mock_api.state import state_dir, state_path

    where = state_path(path)
    if where.exists() and not where.is_dir():
        raise UsageError(f"state directory {where} is not a directory (--state-dir or RTSIP_STATE_DIR)")
    try:
        return state_dir(path)
    except OSError as exc:
        raise UsageError(f"cannot create the state directory {where}: {exc.strerror or exc} "
                         "(--state-dir or RTSIP_STATE_DIR)") from None


def _mock_secret(args: argparse.Namespace, settings: dict[str, Any], sdir: Path) -> str:
    """The flag's (or env's) secret, else the config file's, else the one kept in the state directory."""
    from mock_api.state import webhook_secret

    if args.webhook_secret:
        return str(args.webhook_secret)
    if settings.get("webhook_secret") is not None:
        return checks.webhook_secret(str(settings["webhook_secret"]), f"--config {args.config}: webhook_secret")
    try:
        return webhook_secret(sdir)
    except OSError as exc:
        raise UsageError(f"cannot keep the webhook secret in the state directory {sdir}: "
                         f"{exc.strerror or exc}") from None


def _mock_settings(args: argparse.Namespace, settings: dict[str, Any], sdir: Path) -> dict[str, Any]:
    """The flags laid over the config file's settings: a flag wins, a list flag adds to the file's list."""
    settings["webhook_secret"] = _mock_secret(args, settings, sdir)
    if args.webhook_url:
        settings["webhook_url"] = args.webhook_url
    if args.fault:
        earlier = settings.get("faults") or []
        settings["faults"] = [*earlier, *args.fault] if isinstance(earlier, list) else earlier
    if args.strict_accept:
        settings["strict_accept"] = True
    if args.legacy_beta:
        settings["legacy_beta"] = True
    if args.ring_timeout is not None:
        settings["ring_timeout_s"] = args.ring_timeout
    if args.record:
        settings["record_audio"] = True
    if args.control_token is not None:
        settings["control_token"] = args.control_token
    if args.allow_host:
        earlier = settings.get("allowed_hosts") or []
        hosts = [checks.host_name(name, "--allow-host") for name in args.allow_host]
        settings["allowed_hosts"] = [*earlier, *hosts] if isinstance(earlier, list) else earlier
    # what the journal lets go lands on disk, so a long run loses nothing; the file's own setting wins
    settings.setdefault("journal_file", str(sdir / JOURNAL_FILE))
    return settings


def _sip_options(args: argparse.Namespace, sdir: Path) -> Any:
    """The SIP ingress to start, or None: with --no-sip, or (after one warning line) without pjsua2."""
    from mock_api.running import SipOptions
    from sipworker import sip_available, sip_missing

    if args.no_sip:
        return None
    if not sip_available():
        print(f"rtsip mock: warning: {sip_missing('serving HTTP and WebSocket only (--no-sip hides this line)')}",
              file=sys.stderr, flush=True)
        return None
    return SipOptions(sdir, args.sip_port, args.sip_workers, args.record, args.sip_frame_ms, args.sip_vad_frame_ms,
                      args.sip_media)


def _shard(args: argparse.Namespace) -> Any:
    """--shard I/N, or None."""
    if args.shard is None:
        return None
    from mock_api.shards import Shard

    try:
        return Shard.parse(args.shard)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _azure_env(mock: Any, versions: list[str]) -> dict[str, str]:
    """What an ``AzureOpenAI`` app reads from its environment to reach the mock's HTTPS/WSS listener."""
    env = {"AZURE_OPENAI_ENDPOINT": mock.tls_url, "AZURE_OPENAI_API_KEY": "rtsip-local-azure-key",
           "SSL_CERT_FILE": str(mock.tls_ca)}
    if versions:
        env["OPENAI_API_VERSION"] = versions[-1]
    return env


STOPPING = "rtsip mock: stopping (signal again to stop at once)"


def _stop_on_signals(stop: asyncio.Event) -> None:
    """SIGINT/SIGTERM: a clean stop (``stop`` is set; every socket gets 1001, calls their BYE, within 2 s).
    A second one kills the process at once, by the kernel's default action, whatever the loop is doing;
    the SIP workers see their pipe close and hang up on their own."""
    loop = asyncio.get_running_loop()

    def first(signum: int) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_DFL)
        print(STOPPING, file=sys.stderr, flush=True)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, first, sig)


def cmd_mock(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from mock_api.config import MockConfig, describe_validation_error

    _check_mock(args)
    settings = checks.settings_file(args.config, "--config") if args.config else {}
    shard = _shard(args)
    sdir = _state_dir(args.state_dir)
    settings = _mock_settings(args, settings, sdir)
    try:
        config = MockConfig.model_validate(settings)
    except ValidationError as exc:
        raise UsageError(f"{f'--config {args.config}' if args.config else 'settings'}: "
                         f"{describe_validation_error(exc)}") from None
    from mock_api.running import TlsOptions, freeze_startup_heap, running_mock, tune_malloc  # after the checks

    tune_malloc()  # before any thread of the mock's starts
    from mock_api.stall_watch import StallWatch
    from mock_api.state import clear_running, write_running

    sip = _sip_options(args, sdir)
    tls = None if args.tls_port is None else TlsOptions(sdir, args.tls_port)

    async def serve() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        async with running_mock(config, args.host, args.port, sip, shard=shard, tls=tls) as mock, \
                contextlib.AsyncExitStack() as stack:
            app_env = {"OPENAI_BASE_URL": mock.base_url, "OPENAI_API_KEY": "sk-rtsip-local",
                       "OPENAI_WEBHOOK_SECRET": config.webhook_secret or ""}
            tls_part = ""
            if mock.tls_port is not None:
                app_env.update(_azure_env(mock, config.azure_api_versions))
                tls_part = f" tls_base_url={mock.tls_base_url} azure_endpoint={mock.tls_url}"
            proxy_part = ""
            if args.intercept:
                from mock_api.proxy import intercept_env, running_proxy

                proxy = await stack.enter_async_context(running_proxy(mock, sdir, args.host, args.proxy_port))
                app_env.update(intercept_env(proxy, config.webhook_url))
                proxy_part = f" proxy={proxy.url} proxy_ca={proxy.ca_path}"
            sip_part = f" sip={mock.sip.uri()} ca={mock.sip.certs.ca}" if mock.sip else ""
            write_running(sdir, {"base_url": mock.base_url, "control": mock.url, "env": app_env,
                                 "control_token": config.control_token})
            freeze_startup_heap()
            if args.stall_watch is not None:
                watch = StallWatch(mock.server.journal, args.stall_watch / 1000, echo=True).start()
                stack.callback(watch.stop)
            try:
                print(f"rtsip mock ready: base_url={mock.base_url} webhook_secret={config.webhook_secret} "
                      f"webhook_url={config.webhook_url or '-'}{sip_part}{tls_part}{proxy_part} state_dir={sdir}",
                      flush=True)
                await stop.wait()
                await mock.stop_serving()  # before the proxy goes: its relayed sockets end with the mock's
            finally:
                clear_running(sdir)

    from mock_api.sip import SipIngressError
    from sipworker.ports import PortInUse

    try:
        asyncio.run(serve())
    except PortInUse as exc:  # a usage error: name the flag that picks another port
        flag, other = {"sip_port": ("--sip-port", "free ones"), "proxy_port": ("--proxy-port", "a free one"),
                       "tls_port": ("--tls-port", "a free one")}.get(exc.setting, ("--port", "a free one"))
        print(f"rtsip mock: {exc}; pick another with {flag} (0 picks {other})", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"rtsip mock: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except SipIngressError as exc:
        print(f"rtsip mock: {exc}", file=sys.stderr)
        return 1
    return 0


def _add_trigger(sub: Any) -> None:
    p = sub.add_parser(
        "trigger", help="send one signed webhook to an app, without a call",
        description="Send one correctly signed webhook event to your app, like `stripe trigger`. "
                    "Exit status 0 when the app answers 2xx.",
        epilog=TRIGGER_ENV_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("event", choices=["realtime.call.incoming", "live.transport.incoming", "live.call.incoming"],
                   help="event type to send (the Live ones name the call's live_ session id)")
    p.add_argument("--forward-to", required=True, metavar="URL", help="the app's webhook URL")
    p.add_argument("--secret", default=os.environ.get("OPENAI_WEBHOOK_SECRET"),
                   help="whsec_ secret your app verifies with (env OPENAI_WEBHOOK_SECRET; default: the one "
                        "`rtsip mock` keeps in the state directory; none there is an error)")
    p.add_argument("--state-dir", default=None, help="state directory (env RTSIP_STATE_DIR)")
    p.add_argument("--header", action="append", type=header_arg, default=[], metavar="K:V",
                   help="extra SIP header in data.sip_headers (repeatable)")
    p.add_argument("--from", dest="from_uri", default="sip:+15555550100@127.0.0.1",
                   help="From URI: sip:, sips: or tel: (default %(default)s)")
    p.add_argument("--to", dest="to_uri", default="sip:proj_rtsip@127.0.0.1",
                   help="To URI: sip:, sips: or tel: (default %(default)s)")
    p.add_argument("--call-id", default=None, help="call_id to put in the event (default: a fresh rtc_ id)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the app (default 10)")
    p.set_defaults(func=cmd_trigger)


def _trigger_secret(args: argparse.Namespace) -> str:
    """--secret (or its env), else the mock's kept secret; never a new one, which no app would know."""
    from mock_api.state import read_webhook_secret, state_path

    if args.secret:  # an empty OPENAI_WEBHOOK_SECRET counts as unset
        return checks.webhook_secret(args.secret, "--secret (or OPENAI_WEBHOOK_SECRET)")
    sdir = state_path(args.state_dir)
    secret = read_webhook_secret(sdir)
    if secret is None:
        raise UsageError(f"the state directory {sdir} has no webhook secret (`rtsip mock` keeps one there); pass "
                         "the secret your app verifies with --secret whsec_... or OPENAI_WEBHOOK_SECRET, or the mock's "
                         "state directory with --state-dir")
    return checks.webhook_secret(secret, f"the webhook secret in {sdir}")


def cmd_trigger(args: argparse.Namespace) -> int:
    checks.http_url(args.forward_to, "--forward-to")
    checks.sip_uri(args.from_uri, "--from", tel=True, name_addr=True)
    checks.sip_uri(args.to_uri, "--to", tel=True, name_addr=True)
    checks.positive_seconds(args.timeout, "--timeout")
    secret = _trigger_secret(args)

    import aiohttp  # after the checks: a mistake should not wait for these imports

    from mock_api import ids
    from mock_api.calls import Call
    from mock_api.server import sip_headers
    from mock_api.webhooks import encode, incoming_event, signed_headers

    call = Call.incoming(sip_headers(args.from_uri, args.to_uri, None, args.header), call_id=args.call_id)
    event = incoming_event(call, args.event)
    body = encode(event)
    wid = ids.webhook_id()
    headers = signed_headers(secret, wid, int(time.time()), body)

    async def send() -> tuple[int, str]:
        async with aiohttp.ClientSession() as http, http.post(
            args.forward_to, data=body, headers=headers, allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=args.timeout),
        ) as resp:
            return resp.status, await resp.text()

    named = f"call_id={call.call_id}" if args.event.startswith("realtime.") else f"session_id={call.live_id}"
    print(f"sending {args.event} {named} webhook-id={wid} to {args.forward_to}")
    try:
        status, text = asyncio.run(send())
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise CommandError(f"delivery failed: {type(exc).__name__}: {exc}") from None
    print(f"app answered {status}" + (f": {text[:500]}" if text else ""))
    print(json.dumps(event, indent=2))
    return 0 if 200 <= status < 300 else 1


def _add_run(sub: Any) -> None:
    p = sub.add_parser(
        "run", help="run scenario files against an app under test",
        description="Run YAML scenarios end to end: start the mock and the app (with OPENAI_BASE_URL, "
                    "OPENAI_API_KEY, OPENAI_WEBHOOK_SECRET and PORT set), place the calls, check the expectations, "
                    "tear everything down. Exit status 0 only when every scenario passes (at least --min-pass-rate "
                    "of its runs).",
        epilog="environment:\n  RTSIP_STATE_DIR  state directory for reports (default $XDG_STATE_HOME/rtsip)\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="scenario files or directories of them")
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N", help="scenarios run at once (default 1)")
    p.add_argument("-k", dest="keyword", metavar="EXPR",
                   help="only scenarios whose name or file matches EXPR (substring or glob; 'not X'; 'A or B')")
    p.add_argument("--junit", type=Path, metavar="FILE", help="write a JUnit XML report")
    p.add_argument("--json", type=Path, metavar="FILE", help="write a JSON report with every call's journal")
    p.add_argument("--html", type=Path, metavar="FILE", help="write a self-contained HTML report")
    p.add_argument("--keep", action="store_true",
                   help="keep the run directory (each SIP call's recording of what the caller heard, the "
                        "softphone log) and print where it is; by default it is removed after the reports")
    p.add_argument("--repeat", type=int, metavar="N",
                   help="run every scenario N times and report each one's pass rate, failure kinds and slowest run")
    p.add_argument("--seed", type=int, metavar="S",
                   help="the seed of the faults' probability draws: a scenario's run #n uses S+n-1 (default: random, "
                        "printed, so a run can be replayed)")
    p.add_argument("--min-pass-rate", type=float, default=1.0, metavar="R",
                   help="exit 0 when every scenario passes at least this share of its runs (0 to 1, default 1)")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from .commands.run import run_cli
    from .runner import collect

    for raw in args.paths:
        if not Path(raw).exists():
            raise UsageError(f"no such scenario file or directory: {raw}")
    if not collect(args.paths):
        raise UsageError(f"no scenario files (*.yaml, *.yml) under {', '.join(args.paths)}")
    checks.at_least(args.jobs, 1, "-j/--jobs")
    if args.repeat is not None:
        checks.at_least(args.repeat, 1, "--repeat")
    if args.seed is not None:
        checks.at_least(args.seed, 0, "--seed")
    if not 0 <= args.min_pass_rate <= 1:  # argparse's float() also takes nan and inf
        raise UsageError(f"--min-pass-rate is a share of runs from 0 to 1 (got {args.min_pass_rate:g})")
    for flag, path in (("--junit", args.junit), ("--json", args.json), ("--html", args.html)):
        if path is not None:
            checks.output_file(path, flag)
    return run_cli(args.paths, jobs=args.jobs, keyword=args.keyword, junit=args.junit, json_path=args.json,
                   html=args.html, keep=args.keep, repeat=args.repeat, seed=args.seed,
                   min_pass_rate=args.min_pass_rate)


def _add_schema(sub: Any) -> None:
    p = sub.add_parser("schema", help="print the scenario JSON Schema (for editors)",
                       description="Print the JSON Schema of scenario files, for editor completion and checks.")
    p.add_argument("--out", type=Path, metavar="FILE", help="write to FILE instead of standard output")
    p.set_defaults(func=cmd_schema)


def cmd_schema(args: argparse.Namespace) -> int:
    from .scenario import json_schema

    if not args.out:
        print(json.dumps(json_schema(), indent=2))
        return 0
    checks.output_file(args.out, "--out")
    try:
        args.out.write_text(json.dumps(json_schema(), indent=2) + "\n")
    except OSError as exc:
        raise UsageError(f"--out {args.out}: {exc.strerror or exc}") from None
    return 0


def _add_demo(sub: Any) -> None:
    p = sub.add_parser(
        "demo", help="one real SIP/TLS call through the whole stack, narrated live",
        description="Start the mock with its SIP ingress, the example SDK app and the softphone; place one real "
                    "SIP/TLS call with fixture audio; print the live timeline and both transcripts; write an HTML "
                    "report. Exit status 0 when the call went as expected.",
        epilog="environment:\n  RTSIP_STATE_DIR  where the report goes (default $XDG_STATE_HOME/rtsip)\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--html", type=Path, metavar="FILE",
                   help="where to write the HTML report (default <state dir>/reports/demo-<time>.html)")
    p.add_argument("--live", action="store_true",
                   help="the same call answered on GPT-Live by examples/live_sip_app.py (scenarios/demo_live.yaml)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    if args.html is not None:
        checks.output_file(args.html, "--html")
    return run_demo(args.html, live=args.live)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtsip", description="Local SIP test bench and fake OpenAI Realtime API.",
        epilog=ENV_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(sub)
    _add_mock(sub)
    _add_trigger(sub)
    env_cmd.register(sub)
    call_cmd.register(sub)
    answer_cmd.register(sub)
    load_cmd.register(sub)
    shards_cmd.register(sub)
    _add_run(sub)
    _add_schema(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a CommandError (UsageError: exit 2) is one line on stderr, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except CommandError as exc:
        print(f"rtsip {args.command}: {checks.one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    return code


if __name__ == "__main__":
    sys.exit(main())
