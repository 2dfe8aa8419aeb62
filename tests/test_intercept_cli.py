"""``rtsip mock --intercept`` + ``rtsip env`` + ``rtsip call``: a hard-coded app run by hand, unmodified.

The app (tests/apps/hardcoded_flask_app.py) names https://api.openai.com and wss://api.openai.com and
never reads OPENAI_BASE_URL; the environment ``rtsip env`` prints is all it gets.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp

from harness.mock_process import MockProcess
from mock_api.running import free_port
from tests.helpers import until

ROOT = Path(__file__).resolve().parents[1]
RTSIP = str(Path(sys.executable).parent / "rtsip")
APP = ROOT / "tests" / "apps" / "hardcoded_flask_app.py"


async def rtsip(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, [RTSIP, *args], capture_output=True, text=True, env=env,
                                   timeout=timeout, cwd=ROOT)


async def healthy(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


async def test_hard_coded_app_by_hand_through_rtsip_mock_intercept(tmp_path: Path) -> None:
    base_env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY") and k != "OPENAI_BASE_URL"}
    env = {**base_env, "RTSIP_STATE_DIR": str(tmp_path / "state")}
    app_port = free_port()
    mock = MockProcess(["--port", "0", "--sip-port", "0", "--proxy-port", "0", "--intercept",
                        "--webhook-url", f"http://127.0.0.1:{app_port}/webhook"], env=env, startup_timeout=60)
    async with mock:
        assert mock.ready["proxy"].startswith("http://127.0.0.1:")
        shown = await rtsip("env", "--format", "json", env=env)
        assert shown.returncode == 0, shown.stderr
        app_env = json.loads(shown.stdout)
        assert app_env["HTTPS_PROXY"] == mock.ready["proxy"] and app_env["NODE_USE_ENV_PROXY"] == "1"
        assert app_env["SSL_CERT_FILE"] == app_env["NODE_EXTRA_CA_CERTS"] == mock.ready["proxy_ca"]
        assert app_env["OPENAI_BASE_URL"] == "https://api.openai.com/v1"  # nothing routes around the proxy
        sh = await rtsip("env", env=env)
        assert f"export HTTPS_PROXY={mock.ready['proxy']}" in sh.stdout.splitlines()

        summaries = tmp_path / "summaries.jsonl"
        app = await asyncio.create_subprocess_exec(sys.executable, str(APP), str(app_port), str(summaries),
                                                   env={**base_env, **app_env}, stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL)
        try:
            await until(lambda: healthy(f"http://127.0.0.1:{app_port}/healthz"), timeout=30, what="the app")
            call = await rtsip("call", mock.ready["sip"], "--ca", mock.ready["ca"],
                               "--audio", str(ROOT / "audio_fixtures" / "caller_greeting.wav"), env=env, timeout=90)
            assert call.returncode == 0, call.stdout + call.stderr
            await until(lambda: summaries.exists() and summaries.read_text().strip(), timeout=30,
                        what="the app's post-call summary")
        finally:
            app.terminate()
            await app.wait()
        [row] = [json.loads(line) for line in summaries.read_text().splitlines()]
        assert row["summary"] and row["heard"], row  # chat.completions answered through the proxy
        async with aiohttp.ClientSession() as http, http.get(f"{mock.url}/_mock/calls/{row['call_id']}") as r:
            view = await r.json()
        kinds = [e["kind"] for e in view["entries"]]
        assert "ws.connect" in kinds and view["transport"] == "sip"
    # the mock removed its running file on the way out
    gone = await rtsip("env", env=env)
    assert gone.returncode == 2 and "no rtsip mock is running" in gone.stderr
