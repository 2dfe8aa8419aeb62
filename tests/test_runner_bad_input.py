"""The runner facing broken apps and broken scenario files: a clear verdict, everything torn down."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.runner import run_scenario
from harness.scenario import ScenarioError, load_scenario
from sipworker import sip_missing
from tests.helpers import until

ROOT = Path(__file__).resolve().parent.parent

# A tiny app under test whose behaviour the scenario picks; it writes its pid and a child's pid.
APP = textwrap.dedent('''
    import os, subprocess, sys, time
    from aiohttp import web
    mode = sys.argv[1]
    child = subprocess.Popen(["sleep", "300"])
    open(sys.argv[3], "w").write(f"{os.getpid()} {child.pid}")
    if mode == "crash":
        print("boom: the app failed to start", flush=True)
        sys.exit(3)
    if mode == "never_ready":
        time.sleep(300)
    async def hook(request):
        await request.read()
        open(sys.argv[3] + ".hooked", "w").close()  # the webhook arrived: the call is ringing
        return web.Response(status=500 if mode == "webhook_500" else 200)
    async def health(request):
        return web.Response(text="ok")
    app = web.Application()
    app.router.add_post("/webhook", hook)
    app.router.add_get("/healthz", health)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None)
''')


def scenario_file(tmp_path: Path, mode: str, expect: str = "call_state: ended") -> Path:
    (tmp_path / "app.py").write_text(APP)
    f = tmp_path / f"{mode}.yaml"
    f.write_text(textwrap.dedent(f"""\
        name: {mode}
        app:
          command: ["{{python}}", app.py, {mode}, "{{port}}", pids.txt]
          ready: {{http: /healthz, timeout_s: 3}}
        mock:
          ring_timeout_s: 1.5
          retry_attempts: 2
        calls:
          - steps:
              - say: caller_greeting
        expect:
          {expect}
        """))
    return f


def gone(pids_file: Path) -> bool:
    for pid in map(int, pids_file.read_text().split()):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        # a zombie still answers kill(0); it is gone if /proc says so
        state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
        if state != "Z":
            return False
    return True


@pytest.mark.parametrize(
    ("mode", "expect", "verdict"),
    [
        ("crash", "call_state: ended", "error: app exited with status 3 before it was ready"),
        ("never_ready", "call_state: ended", "error: app not ready after 3 s"),
        ("ignores_webhook", "call_state: ended", "failed: call_state: expected 'ended', got 'no_answer'"),
        ("webhook_500", "webhook_status: 200", "failed: webhook answer: expected 200, got 500"),
    ],
)
async def test_broken_apps_get_a_clear_verdict(tmp_path: Path, mode: str, expect: str, verdict: str) -> None:
    result = await run_scenario(load_scenario(scenario_file(tmp_path, mode, expect)))
    assert not result.passed
    assert result.verdict.startswith(verdict), result.verdict
    if mode == "crash":
        assert "boom: the app failed to start" in result.verdict
    if mode in ("ignores_webhook", "webhook_500"):
        assert any("skipped, the call is no_answer" in n for n in result.notes)
    # the runner has killed them; the kernel takes a moment to reap a killed child's parent
    await until(lambda: gone(tmp_path / "pids.txt"), timeout=10, what="the app and its child to be gone")


@pytest.mark.parametrize(
    ("edit", "line", "message"),
    [
        (("ring_timeout_s: 1.5", "ring_timeout_s: soon"), 6, "at mock.ring_timeout_s: Input should be a valid number"),
        (("retry_attempts: 2", "retry_attempts: 2\n  colour: blue"), 8, "at mock.colour: unknown key 'colour'"),
        (("say: caller_greeting", "say: caller_humming"), 10, "no fixture or audio file 'caller_humming'"),
        (("retry_attempts: 2", "retry_attempts: 2\n  faults: [transcription_404]"), 8, "unknown fault"),
    ],
)
def test_scenario_mistakes_name_file_and_line(tmp_path: Path, edit: tuple[str, str], line: int,
                                              message: str) -> None:
    f = scenario_file(tmp_path, "ignores_webhook")
    f.write_text(f.read_text().replace(*edit))
    with pytest.raises(ScenarioError) as exc:
        load_scenario(f)
    assert exc.value.line == line and message in str(exc.value), str(exc.value)
    assert str(exc.value).startswith(f"{f}:{line}: ")
    # and `rtsip run` reports it as a failed scenario without starting anything
    # wide enough that rich never wraps the path inside its table (the tmp path's length varies by runner)
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(f)], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env={**os.environ, "COLUMNS": "400"})
    assert proc.returncode == 1
    assert f"{f.name}:{line}" in proc.stdout


async def test_ctrl_c_tears_everything_down(tmp_path: Path) -> None:
    f = scenario_file(tmp_path, "ignores_webhook")
    f.write_text(f.read_text().replace("ring_timeout_s: 1.5", "ring_timeout_s: 60"))
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "harness.cli", "run", str(f), cwd=ROOT,
                                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pids = tmp_path / "pids.txt"
    # the app is up and the call is ringing once the app has seen the webhook
    await until(lambda: (tmp_path / "pids.txt.hooked").exists() and pids.read_text().strip(), timeout=60,
                what="the call's webhook at the app")
    proc.send_signal(signal.SIGINT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 130, out.decode()[-2000:]
    assert b"interrupted; everything was torn down" in out
    await until(lambda: gone(pids), timeout=10, what="the app and its child to be gone")


@pytest.mark.usefixtures("without_pjsua2")
async def test_a_sip_call_without_pjsua2_is_an_error_that_says_what_to_install(tmp_path: Path) -> None:
    f = scenario_file(tmp_path, "ignores_webhook")
    f.write_text(f.read_text().replace("  - steps:", "  - mode: sip\n    steps:"))
    scenario = load_scenario(f)
    assert scenario.calls[0].mode == "sip"
    result = await run_scenario(scenario)
    assert not result.passed
    assert result.verdict == f"error: {sip_missing('or use mode: virtual')}"
    assert not (tmp_path / "pids.txt").exists()  # neither the mock's SIP workers nor the app were started
