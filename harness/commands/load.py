"""rtsip load: many calls from one scenario against the app under test, with live progress and reports.

Thin shell over :mod:`harness.load` (virtual callers run on Locust's engine, :mod:`harness.load_locust`).
Exit status 0 when every call completed, 1 when some failed, 2 on bad input (nothing placed), 130 when
stopped by Ctrl-C. ``--worker MASTER`` is only a Locust worker of a ``--master`` run elsewhere: it
starts no mock and no app, and ends when the master does.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.commands import UsageError, checks

EPILOG = """examples:
  rtsip load scenarios/load/turn_every_5s.yaml --calls 200 --concurrency 50 --rate 20
  rtsip load scenarios/load/turn_every_5s.yaml --calls 5000 --concurrency 2000 --rate 100 --json out.json
  rtsip load scenarios/load/sip_two_way.yaml --mode sip --calls 24 --concurrency 12 --csv stats.csv --html report.html
  rtsip load scenarios/load/one_turn.yaml --calls 400 --concurrency 100 --master --master-bind 127.0.0.1:5557 \
      --expect-workers 2          # then, twice, elsewhere:  rtsip load --worker 127.0.0.1:5557
  rtsip load scenarios/load/turn_every_5s.yaml --calls 500 --concurrency 200 --web   # Locust's UI, live

Virtual callers are Locust users (harness.locust_users.VirtualCaller): Locust spawns them, spreads them
over its workers (--processes forks them here; --master waits for `rtsip load --worker` ones) and writes
its own statistics to the run directory (locust_stats.csv, locust.html).

Metrics come from each call's journal: webhook sent -> accept, accept -> WebSocket, INVITE -> 180/200
(sip), caller speech end -> first transcription event and -> first reply audio. The run stops by itself
at --calls or --duration, whichever comes first; Ctrl-C stops the callers (a call in flight counts as
failed, "aborted"), tears everything down and still writes the reports (twice: stop at once).
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "load", help="load-test an app: many virtual or SIP calls from one scenario, with latency percentiles",
        description=__doc__.splitlines()[0] if __doc__ else None, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", type=Path, metavar="SCENARIO", nargs="?",
                   help="scenario file; its first call's steps are used (not with --worker)")
    p.add_argument("--calls", type=int, default=100, metavar="N", help="calls to place in all (default 100)")
    p.add_argument("--concurrency", type=int, default=10, metavar="C", help="calls in flight at once (default 10)")
    p.add_argument("--rate", type=float, default=10.0, metavar="R", help="at most R new calls per second (default 10)")
    p.add_argument("--duration", type=float, metavar="S", help="stop placing calls after S seconds")
    p.add_argument("--mode", choices=["virtual", "sip"], help="callers (default: the scenario's first call's mode)")
    p.add_argument("--interval", type=float, default=1.0, metavar="S", help="CSV/plot interval (default 1 s)")
    p.add_argument("--processes", type=int, metavar="K",
                   help="Locust worker processes forked here for virtual callers (default: one per 1,000 "
                        "concurrent calls, up to the cores)")
    p.add_argument("--master", action="store_true",
                   help="virtual: run Locust's master here and wait for --expect-workers `rtsip load --worker` "
                        "processes (this host or others) to place the calls")
    p.add_argument("--master-bind", default="127.0.0.1:0", metavar="HOST:PORT",
                   help="where the master listens (default 127.0.0.1 and a free port, printed)")
    p.add_argument("--expect-workers", type=int, default=1, metavar="N", help="with --master: workers to wait for")
    p.add_argument("--worker", metavar="HOST:PORT",
                   help="be one Locust worker of the `rtsip load --master` run listening there (nothing else)")
    p.add_argument("--web", action="store_true", help="virtual: serve Locust's web UI (live charts) during the run")
    p.add_argument("--web-port", type=int, default=0, help="the web UI's port (default: a free one, printed)")
    p.add_argument("--mock-processes", type=int, default=1, metavar="M",
                   help="virtual mode: spread the calls' sessions over M mock processes behind one base URL "
                        "(default 1; not with account-wide limits)")
    p.add_argument("--csv", type=Path, metavar="FILE", help="write SIPp-style per-interval statistics")
    p.add_argument("--json", type=Path, metavar="FILE", help="write counts, percentiles and every call's record")
    p.add_argument("--html", type=Path, metavar="FILE", help="write a self-contained HTML report with plots")
    p.add_argument("--port", type=int, default=0, help="the mock's HTTP port (default: a free one)")
    p.add_argument("--sip-port", type=int, default=0, help="the mock's SIP port in sip mode (default: a free one)")
    p.add_argument("--app-port", type=int, default=0, help="the app's port (default: a free one)")
    p.add_argument("--mock-config", type=Path, metavar="FILE",
                   help="YAML/JSON mock settings merged over the scenario's (e.g. limits)")
    p.add_argument("--run-dir", type=Path, metavar="DIR", help="where logs and state go (default: a temp dir)")
    p.add_argument("--no-progress", action="store_true", help="no live progress display")
    p.set_defaults(func=cmd_load)


def check(args: argparse.Namespace) -> None:
    """What argparse lets through but no run can use; the rest (counts, rate, scenario) is load.plan's."""
    if args.scenario is None:
        raise UsageError("give a SCENARIO file (or --worker HOST:PORT to join a --master run)")
    checks.readable_file(args.scenario, "scenario")
    checks.port(args.web_port, "--web-port")
    if (args.master_bind != "127.0.0.1:0" or args.expect_workers != 1) and not args.master:
        raise UsageError("--master-bind and --expect-workers go with --master")
    checks.port(args.port, "--port")
    checks.port(args.sip_port, "--sip-port", lowest=2)  # TCP and UDP listen one below it
    checks.port(args.app_port, "--app-port")
    for flag, path in (("--csv", args.csv), ("--json", args.json), ("--html", args.html)):
        if path is not None:
            checks.output_file(path, flag)
    if args.mock_config is not None:
        checks.mock_settings(args.mock_config, "--mock-config")
    if args.run_dir is not None and args.run_dir.exists() and not args.run_dir.is_dir():
        raise UsageError(f"--run-dir {args.run_dir}: is not a directory")


def cmd_load(args: argparse.Namespace) -> int:
    if args.worker is not None:
        return _worker(args)
    check(args)
    from harness.load import LoadError, LoadOptions, plan, run  # after the checks: a slow import

    options = LoadOptions(
        scenario=args.scenario, calls=args.calls, concurrency=args.concurrency, rate=args.rate,
        duration=args.duration, mode=args.mode, interval=args.interval, csv=args.csv, json=args.json,
        html=args.html, processes=args.processes, mock_processes=args.mock_processes,
        port=args.port, sip_port=args.sip_port, app_port=args.app_port,
        mock_config=args.mock_config, run_dir=args.run_dir, progress=not args.no_progress, master=args.master,
        master_bind=args.master_bind, expect_workers=args.expect_workers, web=args.web, web_port=args.web_port,
    )
    try:
        plan(options)  # here too, so a mistake is one line (run() prints through rich, which wraps)
    except LoadError as exc:
        raise UsageError(str(exc)) from None
    _, code = run(options)
    return code


def _worker(args: argparse.Namespace) -> int:
    """``--worker HOST:PORT``: Locust's worker, in the foreground, once the master is seen to answer."""
    import socket
    import subprocess
    import sys

    from harness.load_locust import LOCUSTFILE
    from harness.load_plan import LoadError, master_address

    if args.scenario is not None or args.master:
        raise UsageError("--worker takes no SCENARIO and no --master: the master sends the scenario and the counts")
    try:
        host, port = master_address(args.worker)
    except LoadError as exc:
        raise UsageError(f"--worker: {exc}") from None
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise UsageError(f"--worker {args.worker}: no master answers there ({exc.strerror or exc}); start "
                         "`rtsip load SCENARIO --master` first") from None
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker", "--master-host", host,
            "--master-port", str(port)]
    try:
        return subprocess.call(argv)
    except KeyboardInterrupt:
        return 130
