"""`rtsip demo` end to end, as README tells a new user to run it, and the committed scenario schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness.scenario import json_schema

ROOT = Path(__file__).resolve().parent.parent


def test_rtsip_demo(tmp_path: Path) -> None:
    report = tmp_path / "demo.html"
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "demo", "--html", str(report)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env={"RTSIP_STATE_DIR": str(tmp_path / "state"),
                                                                 "PATH": "/usr/bin:/bin", "COLUMNS": "200"})
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    # the live timeline went by, SIP and WebSocket lanes included
    for text in ("INVITE sip:proj_rtsip@127.0.0.1", "→ caller: 180", "→ caller: 200", "app → accept",
                 "app connected", "caller starts speaking", "call ended"):
        assert text in out, text
    # both transcripts
    assert "My policy number is 5665-2870." in out
    assert "Thank you. I found policy 5665-2870 for Michelle Perry." in out
    assert report.exists() and "<svg" in report.read_text()
    assert "PASS passed" in out


def test_committed_schema_is_current() -> None:
    committed = json.loads((ROOT / "scenarios" / "scenario.schema.json").read_text())
    assert committed == json_schema(), "run: rtsip schema --out scenarios/scenario.schema.json"
