"""Packaging: ``pip install rtsip`` (no extra) on Python 3.13, where pjsua2 has no wheel.

One test, because the install is the slow part (about a minute with pip's cache warm, a few the first
time): a fresh 3.13 venv gets ``pip install <this tree>`` and pytest, then runs a generated test that
drives a virtual call through the pytest plugin against the example app, and ``rtsip call`` must refuse
with exit 2 and the one line that says what to install.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import cli
from harness.load import LoadError, LoadOptions, plan
from sipworker import SipUnavailable, require_sip, sip_available, sip_missing

ROOT = Path(__file__).resolve().parent.parent
# build leftovers and environments are not part of a source tree pip would be given
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", ".tox", "build", "dist", "*.egg-info", "__pycache__",
                                    "*.so", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis",
                                    "node_modules")

PLUGIN_TEST = """
import pytest

APP = [{python!r}, {app!r}, "--port", "{{port}}"]


@pytest.mark.asyncio
async def test_virtual_call_through_the_plugin(openai_mock):
    openai_mock.configure(script={{"turns": [{{"hears": "My policy number is 5665-2870.",
                                              "says": "Thanks, I found your policy."}}]}})
    openai_mock.expect(accept={{"type": "realtime"}}, server_errors=[], transcription_events="completed",
                       call_state="ended")
    async with openai_mock.app(APP):
        call_id = await openai_mock.control.start_call()
        await openai_mock.control.wait_for(call_id, lambda v: v.state == "active")
        await openai_mock.control.say(call_id, "caller_policy_number", speed=4, wait=True)
        view = await openai_mock.control.wait_for(
            call_id, lambda v: "conversation.item.input_audio_transcription.completed"
            in [e.data["event"].get("type") for e in v.of_kind("ws.server")])
        heard = [e.data["event"]["transcript"] for e in view.of_kind("ws.server")
                 if e.data["event"].get("type") == "conversation.item.input_audio_transcription.completed"]
        assert heard == ["My policy number is 5665-2870."]
        await openai_mock.control.caller_hangup(call_id)
"""


@pytest.fixture
def without_pjsua2(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as if pjsua2 were not installed: a None entry in sys.modules is how the import
    system spells "no such module", so find_spec and import both say so (the workers never start)."""
    monkeypatch.setitem(sys.modules, "pjsua2", None)


@pytest.mark.sip
def test_sip_checks_find_pjsua2_without_importing_it() -> None:
    imported_before = "pjsua2" in sys.modules
    assert sip_available()  # the suite's own environment has the 'sip' extra
    require_sip()
    assert ("pjsua2" in sys.modules) == imported_before


@pytest.mark.usefixtures("without_pjsua2")
def test_without_pjsua2_each_front_end_says_what_to_install(capsys: pytest.CaptureFixture[str]) -> None:
    assert not sip_available()
    with pytest.raises(SipUnavailable) as raised:
        require_sip("or run with --no-sip")
    assert str(raised.value) == ("SIP needs pjsua2: pip install 'rtsip[sip]' (CPython 3.11/3.12 on Linux x86_64); "
                                 "or run with --no-sip")
    assert cli.main(["call", "sip:proj_x@127.0.0.1:5061;transport=tls", "--insecure"]) == 2
    assert cli.main(["demo"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"rtsip call: {sip_missing()}"
    assert err[1].startswith(f"rtsip demo: {sip_missing()}; ") and len(err) == 2
    with pytest.raises(LoadError, match=r"^SIP needs pjsua2: .*; or use --mode virtual$"):
        plan(LoadOptions(scenario=ROOT / "scenarios" / "load" / "sip_two_way.yaml", calls=2, concurrency=2, rate=2))


def python313() -> str | None:
    """A CPython 3.13 to build the venv with: $RTSIP_PYTHON313, pyenv's, or python3.13 on PATH, the first
    that runs (a pyenv shim of a version not selected is on PATH but does not)."""
    candidates = [os.environ.get("RTSIP_PYTHON313"),
                  *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.13*/bin/python3.13")), reverse=True),
                  shutil.which("python3.13")]
    for exe in filter(None, candidates):
        try:
            probe = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2] == (3, 13))"],
                                   capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if probe.stdout.strip() == "True":
            return exe
    return None


def run(argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run with the venv's own environment only (no PYTHONPATH into this tree, no outer venv)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTEST_ADDOPTS")}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(1200)
def test_pip_install_without_extras_on_313_gives_virtual_calls_and_says_what_sip_needs(tmp_path: Path) -> None:
    interpreter = python313()
    if interpreter is None:
        pytest.skip("no Python 3.13 here (set RTSIP_PYTHON313 to one)")
    source = tmp_path / "rtsip-src"  # a copy: pip builds in the tree it is given, which stays clean this way
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    venv = tmp_path / "v313"
    made = run([interpreter, "-m", "venv", str(venv)], tmp_path, 120)
    assert made.returncode == 0, made.stderr
    py, bindir = venv / "bin" / "python", venv / "bin"
    installed = run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source),
                     "pytest", "pytest-asyncio"], tmp_path, 1100)
    assert installed.returncode == 0, installed.stderr[-3000:]

    probe = run([str(py), "-c", "import sys, importlib.util; print(sys.version_info[:2], "
                 "importlib.util.find_spec('pjsua2') is None)"], tmp_path, 60)
    assert probe.stdout.split() == ["(3,", "13)", "True"], probe.stdout + probe.stderr  # 3.13, and no pjsua2

    refused = run([str(bindir / "rtsip"), "call", "sip:proj_x@127.0.0.1:5061;transport=tls", "--insecure"],
                  tmp_path, 60)
    assert (refused.returncode, refused.stdout, refused.stderr) == (2, "", f"rtsip call: {sip_missing()}\n")

    work = tmp_path / "user_tests"  # outside this tree: only the installed plugin is there
    work.mkdir()
    (work / "test_app.py").write_text(textwrap.dedent(PLUGIN_TEST).format(
        python=str(py), app=str(ROOT / "examples" / "sdk_app.py")))
    tested = run([str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_app.py"], work, 300)
    assert tested.returncode == 0, tested.stdout[-4000:] + tested.stderr[-2000:]
    assert "1 passed" in tested.stdout
