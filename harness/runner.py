"""Run scenario files end to end: mock, app under test, calls, expectations, reports.

Each scenario gets its own mock (in this process, on a free port) and its own app
process (own port, own process group). Whatever happens, both are torn down before the
scenario's result is returned.

A scenario's ``surface`` decides which incoming-call webhooks the mock sends the app
(:data:`harness.scenario.SURFACE_EVENTS`); its checks read each call on the surface that owns it.

A SIP call's softphone records what the caller heard. Those recordings live in a run
directory: pass ``run_dir`` and they stay there (each scenario in a subdirectory of its own)
for reports written after the run, which draw the caller's side from them; without it they
go to a temporary directory removed before the result is returned, and the result's calls
stop naming them.

Repeats (``rtsip run --repeat N``): each scenario runs N times, each run with its own mock. Run ``i`` gives the
faults with a ``probability`` and no seed of their own the seed ``seed + i``
(:func:`mock_api.fault_script.seeded`), so the same ``seed`` replays the same fault draws; the result keeps
those draws (:attr:`ScenarioResult.fault_draws`). Without a seed the faults keep theirs (0 by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from mock_api import certs
from mock_api.client import MockClient, MockControlError
from mock_api.config import MockConfig, RetryPolicy
from mock_api.control_models import CallView, JournalEntry
from mock_api.fault_script import FaultDraw, FaultScript, seeded
from mock_api.running import RunningMock, SipOptions, free_port, running_mock
from mock_api.state import state_dir
from mock_api.stubs import install as install_stubs
from sipworker import sip_available, sip_missing

from .app_process import AppFailed, AppProcess, app_argv, app_env, fill_placeholders, template_values
from .caller_steps import drive
from .callers import Caller, CallerError, SipCaller, VirtualCaller
from .expect import Check, MockBug, evaluate, mock_bug_verdict, mock_bugs
from .journal_view import JournalView
from .scenario import SURFACE_EVENTS, Scenario, ScenarioError, expand, load_scenario, winner
from .softphone import Softphone
from .turn_check import turn_warnings

DEFAULT_RING_TIMEOUT_S = 8.0
SETTLE_S = 1.5  # quiet time after the last step before the journal is read
# A barge_in waits for the reply to start: Realtime's response.created, GPT-Live's first reply words.
REPLY_STARTED = {"realtime": "response.created", "live": "session.output_transcript.delta"}


@dataclass
class ScenarioResult:
    name: str
    file: str
    passed: bool
    verdict: str
    seconds: float
    checks: list[Check] = field(default_factory=list)
    calls: list[CallView] = field(default_factory=list)
    app_output: list[tuple[float, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the run passed or failed, but something looks wrong
    description: str = ""
    seed: int = 0
    app_started_at: float | None = None  # wall clock, the journal's clock, for aligning app output
    surface: str = "realtime"  # the scenario's: realtime, live or both
    compare: str | None = None  # the scenario whose variants are reported side by side (compare: true)
    command: list[str] = field(default_factory=list)  # the app's argv
    repeat: int = 0  # which run of the scenario this is (0-based), of ``repeats``
    repeats: int = 1
    fault_seed: int | None = None  # the seed its faults' draws used, when the run gave one
    fault_draws: list[dict[str, Any]] = field(default_factory=list)  # each call's draws of chance

    @property
    def label(self) -> str:
        """The run's name: the scenario's, and which run of it when it is repeated."""
        return self.name if self.repeats == 1 else f"{self.name} #{self.repeat + 1}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "file": self.file, "passed": self.passed, "verdict": self.verdict,
            "seconds": round(self.seconds, 3), "seed": self.seed, "description": self.description,
            "app_started_at": self.app_started_at, "surface": self.surface, "compare": self.compare,
            "command": self.command,
            "checks": [c.to_json() for c in self.checks], "notes": self.notes,
            "warnings": self.warnings,
            "calls": [c.model_dump(mode="json") for c in self.calls],
            "app_output": [{"t": round(t, 3), "line": line} for t, line in self.app_output],
            **self._repeat_json(),
        }

    def _repeat_json(self) -> dict[str, Any]:
        """Only for runs that are repeated or drew faults, so other reports stay as they were."""
        out: dict[str, Any] = {}
        if self.repeats != 1:
            out.update(repeat=self.repeat, repeats=self.repeats)
        if self.fault_seed is not None or self.fault_draws:
            out.update(fault_seed=self.fault_seed, fault_draws=self.fault_draws)
        return out


def collect(paths: list[str | Path]) -> list[Path]:
    """Scenario files under the given files and directories, in a stable order."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out += sorted(q for q in p.rglob("*.y*ml") if q.suffix in (".yaml", ".yml"))
        else:
            out.append(p)
    return out


def selected(name: str, file: Path, expr: str | None) -> bool:
    """``-k``: a substring or glob of the name or file; ``not X`` negates; ``A or B`` either."""
    if not expr:
        return True
    for alt in expr.split(" or "):
        alt = alt.strip()
        neg = alt.startswith("not ")
        pat = alt[4:].strip() if neg else alt
        hit = any(pat in s or fnmatch.fnmatch(s, pat) for s in (name, file.name, str(file)))
        if hit != neg:
            return True
    return False


def _ca_for(scenario: Scenario, mock: RunningMock, proxy_vars: dict[str, str]) -> str:
    """The CA an app should trust for ``{ca}``: the interception proxy's, the SIP ingress's, or (only
    when the scenario names ``{ca}``) the state directory's, made on first use."""
    if proxy_vars:
        return proxy_vars["SSL_CERT_FILE"]
    if mock.sip is not None:
        return str(mock.sip.certs.ca)
    app = scenario.app
    if any("{ca}" in text for text in [*app.command, *app.env.values(), app.cwd or ""]):
        return str(certs.ensure_ca(state_dir())[0])
    return ""


def with_fault_seed(scenario: Scenario, seed: int) -> Scenario:
    """The scenario with ``seed`` given to its faults of chance that name none (the mock's and each call's)."""
    mock = scenario.mock.model_copy(update={"faults": seeded(scenario.mock.faults, seed)})
    calls = [c.model_copy(update={"faults": seeded(c.faults, seed)}) for c in scenario.calls]
    return scenario.model_copy(update={"mock": mock, "calls": calls})


def fault_draws(scenario: Scenario) -> list[tuple[int, FaultDraw]]:
    """The draws the mock makes for each call (by index) of ``scenario``: its faults, then the call's, keyed by
    the call's arrival number at the mock (the runner starts a scenario's calls in order, 1 first)."""
    return [(i, d) for i, spec in enumerate(scenario.calls)
            for d in FaultScript.of([*scenario.mock.faults, *spec.faults], key=str(i + 1)).draws]


async def run_scenario(scenario: Scenario, on_step: Callable[[str], None] | None = None,
                       on_entry: Callable[[str, JournalEntry], None] | None = None,
                       run_dir: Path | None = None, fault_seed: int | None = None) -> ScenarioResult:
    """Run one scenario (one variant). ``on_entry`` sees each journal entry of each call as it lands.

    ``run_dir``: where a SIP call's recordings and the softphone log are kept (see the module's docstring).
    ``fault_seed``: the seed of its faults of chance that name none.
    """
    started = time.monotonic()
    if fault_seed is not None:
        scenario = with_fault_seed(scenario, fault_seed)
    note = on_step or (lambda _msg: None)
    file = Path(scenario.source or ".")
    result = ScenarioResult(scenario.name, str(file), False, "", 0.0, description=scenario.description,
                            seed=scenario.seed, surface=scenario.surface,
                            compare=(scenario.family or scenario.name) if scenario.compare else None,
                            command=list(scenario.app.command), fault_seed=fault_seed)
    for i, made in fault_draws(scenario):
        result.fault_draws.append({"call": i, **made.to_json()})
        result.notes.append(f"call {i + 1}: {made.describe()}")
    needs_sip = any(c.mode == "sip" for c in scenario.calls)
    if needs_sip and not sip_available():  # a verdict that says what to install, not a worker's ImportError
        result.verdict = f"error: {sip_missing('or use mode: virtual')}"
        result.seconds = time.monotonic() - started
        return result
    port = free_port()
    config = MockConfig(
        webhook_url=f"http://127.0.0.1:{port}{scenario.app.webhook_path}",
        webhook_events=SURFACE_EVENTS[scenario.surface],
        faults=scenario.mock.faults, script=scenario.mock.script.model_dump(exclude_defaults=True),
        strict_accept=scenario.mock.strict_accept, legacy_beta=scenario.mock.legacy_beta,
        ring_timeout_s=scenario.mock.ring_timeout_s or DEFAULT_RING_TIMEOUT_S,
        retry=RetryPolicy(max_attempts=scenario.mock.retry_attempts, initial_delay_s=0.2, max_delay_s=1.0,
                          timeout_s=5.0),
    )
    sip = SipOptions(state_dir(), port=0, workers=1) if needs_sip else None
    phone: Softphone | None = None
    async with running_mock(config, sip=sip) as mock, MockClient(mock.url) as control, \
            contextlib.AsyncExitStack() as extra:
        install_stubs(mock.server, scenario.mock.stubs)
        proxy_vars: dict[str, str] = {}
        if scenario.app.openai == "intercept":
            # Zero-change interception (mock_api/proxy.py): HTTPS_PROXY + the local CA instead of a base URL;
            # proxy_env also pins OPENAI_BASE_URL to https://api.openai.com/v1. Torn down before the mock.
            from mock_api.proxy import proxy_env, running_proxy

            proxy = await extra.enter_async_context(running_proxy(mock, state_dir()))
            proxy_vars = proxy_env(proxy, proxy.ca_path)
        values = template_values(port, mock.base_url, config.webhook_url or "", _ca_for(scenario, mock, proxy_vars),
                                 proxy_vars.get("HTTPS_PROXY", ""))
        user_env = {k: fill_placeholders(v, values) for k, v in scenario.app.env.items()}
        env = app_env(mock.base_url, mock.server.config.webhook_secret or "", port, user_env)
        env.update(proxy_vars)
        if proxy_vars and "OPENAI_BASE_URL" in user_env:  # e.g. an Azure endpoint: intercepted as well
            env["OPENAI_BASE_URL"] = user_env["OPENAI_BASE_URL"]
        cwd = (file.parent / fill_placeholders(scenario.app.cwd or ".", values)).resolve()
        app = AppProcess(app_argv(scenario.app.command, port, values), env, cwd)
        watchers: list[_Watcher] = []
        try:
            note("starting app")
            await app.start()
            result.app_started_at = time.time()
            ready = scenario.app.ready
            secs = await app.wait_ready(port=port, http_path=ready.http, log_regex=ready.log, timeout=ready.timeout_s)
            result.notes.append(f"app ready in {secs:.2f} s")
            call_ids = []
            callers: list[Caller] = []
            for i, spec in enumerate(scenario.calls):
                note(f"call {i + 1}/{len(scenario.calls)} ({spec.mode})")
                caller: Caller
                if spec.mode == "sip":
                    assert mock.sip is not None
                    if phone is None:
                        own = _scenario_dir(scenario.name, run_dir)
                        if run_dir is None:
                            extra.callback(_remove_run_dir, own, result)
                        log = extra.enter_context(await asyncio.to_thread(open, own / "softphone.log", "a"))
                        phone = await extra.enter_async_context(
                            Softphone(ca=mock.sip.certs.ca, state_dir=own / "phone", stderr=log))
                    caller = await SipCaller.place(phone, mock.sip.uri(), control, spec, file.parent)
                else:
                    caller = await VirtualCaller.place(control, spec, file.parent)
                callers.append(caller)
                call_ids.append(caller.call_id)
                if on_entry is not None:
                    watchers.append(_Watcher(control, caller.call_id, on_entry))
                target = _ScenarioTarget(caller, control, result, winner(scenario.surface, scenario.expect))
                await drive(spec.steps, target, spec.max_duration_s)
            await _settle(control, call_ids)
            result.calls = [await control.call(cid) for cid in call_ids]
            for view, caller in zip(result.calls, callers, strict=True):
                media = caller.media()
                view.recording = media.get("recording")
                view.sent_audio = media.get("sent_audio") or []
                view.caller = media
            for spec, view in zip(scenario.calls, result.calls, strict=True):
                result.warnings.extend(turn_warnings(scenario.mock.script, spec, view))
            http_results = await _http_checks(scenario, port, result.calls[0] if result.calls else None)
            result.checks = evaluate(scenario.expect, result.calls[0] if result.calls else None, app.output,
                                     http_results)
            if app.returncode not in (None, 0):
                result.notes.append(f"app exited with status {app.returncode} during the run")
            failed = [c for c in result.checks if not c.ok]
            result.passed = not failed
            result.verdict = "passed" if not failed else "failed: " + "; ".join(c.describe() for c in failed)
        except AppFailed as exc:
            result.verdict = f"error: {exc}"
        except (MockControlError, CallerError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            result.verdict = f"error: {type(exc).__name__}: {exc}"
        finally:
            note("tearing down")
            for w in watchers:  # the live timeline gets the last entries, even after a failure
                with contextlib.suppress(Exception):
                    await w.stop()
            await app.stop()
            result.app_output = list(app.lines)
            if not result.calls:
                result.calls = [v for v in [await _safe_view(control, cid) for cid in mock.server.calls] if v]
            _fail_on_mock_bugs(result, await journaled_bugs(control, result.calls))
    result.seconds = time.monotonic() - started
    return result


async def journaled_bugs(control: MockClient, views: list[CallView]) -> list[MockBug]:
    """The mock's own bugs in ``views`` (the calls), the server timeline and every call-less session's
    (a mock that cannot answer has none to show: whatever else went wrong is already the verdict)."""
    try:
        server_entries = await control.server_journal()
        sessions = {s["id"]: await control.session_journal(s["id"]) for s in await control.sessions()}
    except (MockControlError, aiohttp.ClientError):
        return mock_bugs(views, [])
    return mock_bugs(views, server_entries, sessions)


def _fail_on_mock_bugs(result: ScenarioResult, bugs: list[MockBug]) -> None:
    """A bug of the mock fails the scenario whatever the checks said, with a verdict that says whose
    fault it is (so nobody hunts for it in their app) and each traceback in the notes."""
    if not bugs:
        return
    result.passed = False
    result.verdict = mock_bug_verdict(bugs)
    result.notes.extend(bug.describe() for bug in bugs)


def _scenario_dir(name: str, run_dir: Path | None) -> Path:
    """A fresh directory for one scenario's softphone: under ``run_dir``, or a temporary one."""
    if run_dir is None:
        return Path(tempfile.mkdtemp(prefix="rtsip-run-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^\w.-]+", "_", name).strip("_")[:60] or "scenario"
    return Path(tempfile.mkdtemp(prefix=f"{slug}-", dir=run_dir))


def _remove_run_dir(path: Path, result: ScenarioResult) -> None:
    """Remove a temporary run directory once the softphone has closed, and the paths into it from the result.

    A result that outlives its files must not name them, or its reports would point readers at nothing.
    """
    shutil.rmtree(path, ignore_errors=True)
    for view in result.calls:
        if view.recording and Path(view.recording).is_relative_to(path):
            view.recording = None
            view.caller.pop("recording", None)


async def _safe_view(control: MockClient, call_id: str) -> CallView | None:
    try:
        return await control.call(call_id)
    except (MockControlError, aiohttp.ClientError):
        return None


async def _wait_state(control: MockClient, call_id: str, timeout: float) -> CallView:
    try:
        return await control.wait_for(call_id, lambda v: v.state != "ringing", timeout=timeout)
    except TimeoutError:
        return await control.call(call_id)


class _ScenarioTarget:
    """A scenario call for :func:`harness.caller_steps.drive`: every step is tried, and each one
    skipped or waited for in vain is noted in the result, so the verdict can say what happened."""

    def __init__(self, caller: Caller, control: MockClient, result: ScenarioResult, surface: str = "realtime") -> None:
        self.caller, self.control, self.result, self.surface = caller, control, result, surface

    @property
    def over(self) -> bool:
        return False  # a hangup step does not end the steps: later ones are noted as skipped

    async def answered(self, timeout: float) -> str | None:
        view = await _wait_state(self.control, self.caller.call_id, min(DEFAULT_RING_TIMEOUT_S + 1, timeout))
        return None if view.state in ("active", "referring") else f"the call is {view.state}"

    async def say(self, ref: str, left: float) -> bool:
        await self.caller.say(ref)
        return True

    async def dial(self, digits: str) -> bool:
        await self.caller.dtmf(digits)
        return True

    async def hold(self, seconds: float) -> bool:
        await self.caller.hold(seconds)
        return True

    async def new_ssrc(self) -> bool:
        """Once the mock has heard the caller's first SSRC (else a change could pass unnoticed)."""
        await _wait_for_event(self.control, self.caller.call_id, "sip.ssrc", 10.0, self.result)
        await self.caller.new_ssrc()
        return True

    async def hang_up(self) -> bool:
        await self.caller.hangup()
        return True

    async def wait_event(self, kind: str, count: int, timeout: float) -> bool:
        if kind == REPLY_STARTED["realtime"]:  # the step driver's barge_in wait, said on this call's surface
            kind = REPLY_STARTED.get(self.surface, kind)
        await _wait_for_event(self.control, self.caller.call_id, kind, timeout, self.result, count=count)
        return True

    def note(self, text: str) -> None:
        self.result.notes.append(f"call {self.caller.call_id}: {text}")


async def _wait_for_event(control: MockClient, call_id: str, kind: str, timeout: float,
                          result: ScenarioResult, count: int = 1) -> None:
    """Until the call's journal holds ``count`` entries of ``kind`` (a journal kind or an event type)."""

    def seen(v: CallView) -> bool:
        return JournalView.of_call(v).count(kind) >= count or v.terminal

    try:
        await control.wait_for(call_id, seen, timeout=timeout, interval=0.05)
    except TimeoutError:
        result.notes.append(f"call {call_id}: no {kind} within {timeout:.1f} s")


class _Watcher:
    """Hands each new journal entry of a call to ``on_entry`` while it runs (live timelines)."""

    def __init__(self, control: MockClient, call_id: str, on_entry: Callable[[str, JournalEntry], None]) -> None:
        self.control, self.call_id, self.on_entry = control, call_id, on_entry
        self.seen = 0
        self.task = asyncio.create_task(self._run())

    async def flush(self) -> None:
        view = await self.control.call(self.call_id)
        for entry in view.entries[self.seen:]:
            self.on_entry(self.call_id, entry)
        self.seen = len(view.entries)

    async def _run(self, interval: float = 0.1) -> None:
        while True:
            await self.flush()
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.flush()


async def _settle(control: MockClient, call_ids: list[str], quiet_s: float = SETTLE_S, limit_s: float = 10) -> None:
    """Wait until the journal of every call has been quiet for ``quiet_s`` (async transcripts land)."""
    end = time.monotonic() + limit_s
    last = -1
    quiet_since = time.monotonic()
    while time.monotonic() < end:
        total = 0
        for cid in call_ids:
            total += len((await control.call(cid)).entries)
        if total != last:
            last, quiet_since = total, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return
        await asyncio.sleep(0.1)


def http_path(path: str, view: CallView | None) -> str:
    """An ``http`` check's path for a call: ``{call_id}`` is the id the app knows the call by on the surface that
    owns it (``rtc_…``, or GPT-Live's ``live_…``); ``{session_id}`` is always the ``live_…`` one."""
    if view is None:
        return path.replace("{call_id}", "").replace("{session_id}", "")
    own = view.live_id if view.surface == "live" and view.live_id else view.call_id
    return path.replace("{call_id}", own).replace("{session_id}", view.live_id)


async def _http_checks(scenario: Scenario, port: int, view: CallView | None) -> list[tuple[str, int | None, str]]:
    out: list[tuple[str, int | None, str]] = []
    async with aiohttp.ClientSession() as http:
        for check in scenario.expect.http:
            url = f"http://127.0.0.1:{port}{http_path(check.path, view)}"
            try:
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                    out.append((url, resp.status, await resp.text()))
            except (aiohttp.ClientError, TimeoutError) as exc:
                out.append((url, None, f"{type(exc).__name__}: {exc}"))
    return out


async def run_files(files: list[Path], jobs: int = 1, on_result: Callable[[ScenarioResult], None] | None = None,
                    on_step: Callable[[str, str], None] | None = None,
                    keyword: str | None = None, run_dir: Path | None = None, repeat: int = 1,
                    seed: int | None = None) -> list[ScenarioResult]:
    """Run scenario files (each variant whose name matches ``keyword``), ``jobs`` at a time.

    A file that does not load is a failed result. ``run_dir`` keeps SIP recordings, as for ``run_scenario``.
    Each scenario runs ``repeat`` times, run ``i`` with the fault seed ``seed + i`` (when ``seed`` is given);
    the results come in file order, a scenario's runs together.
    """
    sem = asyncio.Semaphore(max(1, jobs))

    async def one(path: Path, scenario: Scenario, i: int) -> ScenarioResult:
        label = scenario.name if repeat == 1 else f"{scenario.name} #{i + 1}"
        fault_seed = None if seed is None else seed + i
        async with sem:
            t0 = time.monotonic()
            try:
                res = await run_scenario(scenario, (lambda m: on_step(label, m)) if on_step else None,
                                         run_dir=run_dir, fault_seed=fault_seed)
            except Exception as exc:  # a runner bug fails this scenario, not the whole run
                res = ScenarioResult(scenario.name, str(path), False, f"error: runner: {type(exc).__name__}: {exc}",
                                     time.monotonic() - t0, fault_seed=fault_seed)
            res.repeat, res.repeats = i, repeat
            if on_result:
                on_result(res)
            return res

    runs: list[tuple[Path, Scenario]] = []
    broken: list[ScenarioResult] = []
    for path in files:
        try:
            runs += [(path, s) for s in expand(load_scenario(path)) if selected(s.name, path, keyword)]
        except ScenarioError as exc:
            if not selected(path.stem, path, keyword):
                continue
            res = ScenarioResult(path.stem, str(path), False, f"error: {exc}", 0.0)
            broken.append(res)  # once: every run of a file that does not load would say the same
            if on_result:
                on_result(res)
    return broken + list(await asyncio.gather(*(one(p, s, i) for p, s in runs for i in range(repeat))))
