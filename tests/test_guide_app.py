"""The guide-style app (Flask + requests + websockets, hard-coded api.openai.com) runs unmodified on the mock.

Runs ``scenarios/examples/guide_app.yaml`` (``openai: intercept``) through the scenario runner: the
runner starts the interception proxy and hands the app ``HTTPS_PROXY`` and the local CA; a virtual
call is accepted by ``requests``, the ``websockets`` client attaches, and a caller turn comes back as
a transcript the app prints and serves.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from harness.runner import run_scenario
from harness.scenario import expand, load_scenario

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "examples" / "guide_app.yaml"
APP = ROOT / "examples" / "guide_app.py"


def test_guide_app_hard_codes_openai_urls() -> None:
    source = APP.read_text()
    assert '"https://api.openai.com/v1/realtime/calls/"' in source
    assert '"wss://api.openai.com/v1/realtime?call_id="' in source
    assert "OPENAI_BASE_URL" not in source and "base_url" not in source


async def test_guide_app_runs_unmodified_through_interception(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTSIP_STATE_DIR", str(tmp_path / "state"))  # the CA goes here, not into ~
    variants = {s.name.split("[")[1].rstrip("]"): s for s in expand(load_scenario(SCENARIO))}
    assert set(variants) == {"fixed", "no_transcription", "beta_accept"}
    results = dict(zip(variants, await asyncio.gather(*(run_scenario(s) for s in variants.values())), strict=True))
    for name, res in results.items():
        assert res.passed, f"{name}: {res.verdict}\n" + "\n".join(line for _, line in res.app_output[-30:])

    fixed = results["fixed"]
    (call,) = fixed.calls
    accept = next(e for e in call.entries if e.kind == "rest.request" and e.data.get("op") == "accept")
    assert accept.data["headers"]["User-Agent"].startswith("python-requests/")  # the app's own client
    assert accept.data["path"] == f"/v1/realtime/calls/{call.call_id}/accept"
    assert any(e.kind == "ws.connect" for e in call.entries)
    assert any("websocket connected" in line for _, line in fixed.app_output)
    assert any("USER: I need to file a claim" in line for _, line in fixed.app_output)
    assert (tmp_path / "state" / "tls" / "hosts" / "api.openai.com.pem").is_file()

    # the forum variant shows its symptom: the guide app's WebSocket is refused once the call dropped
    assert results["beta_accept"].calls[0].state == "failed"
    assert any("WebSocket error: InvalidStatus" in line for _, line in results["beta_accept"].app_output)
