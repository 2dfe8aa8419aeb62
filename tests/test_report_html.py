"""The HTML report, opened in a real headless chromium (Debian's ``chromium`` package).

Real results come from running forum scenarios against the example app: one passes, one is
made to fail (the buggy app held to the fixed app's expectations). The page is loaded over
the DevTools protocol, which reports every console message, uncaught exception and blocked
load; the DOM is then queried for the ladder, the waveform and the highlighted failure.
Chromium missing is a failure with the fix in the message, never a skip: CI installs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from harness.report.html import audio_paths, ladder_rows, render_html, transcripts, wav_envelope, write_html
from harness.report.waveform import waveform
from harness.runner import ScenarioResult, run_scenario
from harness.scenario import expand, load_scenario
from mock_api.control_models import CallView, JournalEntry

ROOT = Path(__file__).resolve().parent.parent
FORUM = ROOT / "scenarios" / "forum"
FIXTURE_WAV = ROOT / "audio_fixtures" / "caller_greeting.wav"
HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync", "--hide-scrollbars"]


def chromium_binary() -> str:
    for name in (os.environ.get("RTSIP_CHROMIUM", ""), "chromium", "chromium-browser"):
        found = name and shutil.which(name)
        if found:
            return found
    pytest.fail("headless chromium is needed for the HTML report tests and was not found: "
                "install Debian's package with `apt-get install -y chromium` (CI does), "
                "or point RTSIP_CHROMIUM at a chromium binary", pytrace=False)


# ---- real results, produced once for the module ---------------------------------------------------


def _scenarios() -> list[Any]:
    """transcript-null: the fixed app as is (passes) and the buggy app held to the fixed checks (fails)."""
    s = load_scenario(FORUM / "01_transcript_null.yaml")
    buggy, fixed = s.variants["buggy"], s.variants["fixed"]
    s = s.model_copy(update={"variants": {"fixed": fixed,
                                          "buggy-app-fixed-checks": buggy.model_copy(update={"expect": fixed.expect})}})
    return expand(s)


@pytest.fixture(scope="module")
def results() -> list[ScenarioResult]:
    async def run() -> list[ScenarioResult]:
        return list(await asyncio.gather(*(run_scenario(sc) for sc in _scenarios())))

    out = asyncio.run(run())

    def why(r: ScenarioResult) -> str:
        return "\n".join([r.verdict, *r.notes, *(f"{t:.3f} {line}" for t, line in r.app_output)])

    fixed, bad = out
    assert fixed.passed, why(fixed)
    # it fails on its checks (the symptom), not on an error
    assert bad.verdict.startswith("failed: accept.audio.input.transcription.model"), why(bad)
    return out


def _with_recording(results: list[ScenarioResult]) -> list[ScenarioResult]:
    """The passing result again, its call carrying a WAV the way a SIP leg's journal does."""
    base = results[0] if results[0].passed else results[1]
    view = base.calls[0]
    last = view.entries[-1]
    rec = JournalEntry(seq=last.seq + 1, t_ms=last.t_ms + 1, kind="sip.ended",
                       data={"kind": "call_ended", "code": 200, "by": "remote", "recording": str(FIXTURE_WAV)})
    call = view.model_copy(update={"entries": [*view.entries, rec]})
    return [ScenarioResult(base.name + " (with recording)", base.file, True, "passed", base.seconds,
                           checks=base.checks, calls=[call], app_output=base.app_output, notes=base.notes)]


@pytest.fixture(scope="module")
def report(results: list[ScenarioResult], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "run.html"
    failing = [r for r in results if not r.passed]
    passing = [r for r in results if r.passed]
    write_html([*failing, *passing, *_with_recording(results)], path)
    return path


# ---- a small DevTools-protocol client ----------------------------------------------------------------


class Browser:
    """Headless chromium driven over the DevTools protocol (one page, flattened session)."""

    def __init__(self, profile: Path) -> None:
        self.profile = profile
        self.proc: asyncio.subprocess.Process | None = None
        self.ws: Any = None
        self.session = ""
        self.events: list[dict[str, Any]] = []
        self._next = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> Browser:
        self.proc = await asyncio.create_subprocess_exec(
            chromium_binary(), *HEADLESS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
            "--window-size=1400,2000", "about:blank",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if self.proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start (exit status {self.proc.returncode})")
            await asyncio.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        self.ws = await websockets.connect(f"ws://127.0.0.1:{port}{path}", max_size=None)
        self._reader = asyncio.create_task(self._read())
        target = await self.send("Target.createTarget", {"url": "about:blank"}, browser=True)
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True},
                                   browser=True)
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            await self.send(f"{domain}.enable")
        return self

    async def _read(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw)
            if "id" in msg and msg["id"] in self._waiting:
                self._waiting.pop(msg["id"]).set_result(msg)
            elif "method" in msg:
                self.events.append(msg)

    async def send(self, method: str, params: dict[str, Any] | None = None, browser: bool = False) -> dict[str, Any]:
        self._next += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._next] = fut
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if not browser:
            msg["sessionId"] = self.session
        await self.ws.send(json.dumps(msg))
        reply = await asyncio.wait_for(fut, 30)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    async def open(self, url: str) -> None:
        self.events.clear()
        await self.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + 30
        while not any(e["method"] == "Page.loadEventFired" for e in self.events):
            assert time.monotonic() < deadline, "the page never finished loading"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # late console messages

    async def eval(self, expression: str) -> Any:
        res = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                   "awaitPromise": True})
        if "exceptionDetails" in res:
            raise AssertionError(f"page script failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def problems(self) -> list[str]:
        """Console errors/warnings, uncaught exceptions, and browser log errors (CSP, failed loads)."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                out.append(f"exception: {p.get('exceptionDetails', {}).get('text')} {p.get('exceptionDetails')}")
            elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
                out.append(f"console.{p.get('type')}: {p.get('args')}")
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return out

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.send("Browser.close", browser=True)
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self.proc is not None:
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@contextlib.asynccontextmanager
async def browser() -> AsyncIterator[Browser]:
    with tempfile.TemporaryDirectory(prefix="rtsip-chromium-") as profile:
        b = Browser(Path(profile))
        try:
            yield await b.start()
        finally:
            await b.close()


# ---- the page in the browser ---------------------------------------------------------------------------


async def test_report_opens_in_chromium_without_console_errors(report: Path) -> None:
    async with browser() as b:
        await b.open(report.as_uri())
        assert await b.eval("document.documentElement.getAttribute('data-ready')") == "1", "the inline script ran"
        assert b.problems() == []
        # the inline script works: expanding every scenario, then filtering to failures
        await b.eval("document.getElementById('expand-all').click()")
        assert await b.eval("[...document.querySelectorAll('details.scenario')].every(d => d.open)")
        await b.eval("document.getElementById('only-failed').click()")
        hidden = await b.eval("[...document.querySelectorAll('details.scenario')]"
                              ".filter(d => getComputedStyle(d).display === 'none').length")
        assert hidden == 2  # the passing run and the one with a recording
        assert b.problems() == []


async def test_report_shows_ladder_waveform_transcripts_and_the_failure(report: Path) -> None:
    async with browser() as b:
        await b.open(report.as_uri())
        await b.eval("document.getElementById('expand-all').click()")
        dom = await b.eval("""(() => {
          const ladders = [...document.querySelectorAll('.ladder')];
          const first = ladders[0];
          const lanes = [...first.querySelectorAll('svg.lanes text')].map(t => t.textContent);
          const rows = [...first.querySelectorAll('details.ev')];
          const arrows = first.querySelectorAll('line.arrow').length;
          const fail = document.querySelector('.check.fail');
          const failBox = fail && fail.getBoundingClientRect();
          const waves = [...document.querySelectorAll('svg.waveform')];
          const wbox = waves[0].getBoundingClientRect();
          return {
            ladders: ladders.length, lanes, rows: rows.length, arrows,
            rowText: rows.map(r => r.querySelector('summary').textContent).join('\\n'),
            appRows: first.querySelectorAll('details.ev.app-line').length,
            failName: fail && fail.querySelector('.name').textContent,
            failBg: fail && getComputedStyle(fail).backgroundColor,
            failBorder: fail && getComputedStyle(fail).borderLeftColor,
            failVisible: !!failBox && failBox.height > 20,
            okChips: document.querySelectorAll('.chip.check.ok').length,
            waveforms: waves.length, waveWidth: wbox.width, waveHeight: wbox.height,
            sayBars: document.querySelectorAll('svg.waveform rect.wf-say').length,
            chunkBars: document.querySelectorAll('svg.waveform rect.wf-chunk').length,
            trueWaves: [...document.querySelectorAll('svg.waveform polygon.wave-true')]
              .map(p => Number(p.dataset.points)),
            transcripts: [...document.querySelectorAll('.tr')].map(t => t.textContent),
            badges: [...document.querySelectorAll('details.scenario > summary .badge')].map(b => b.textContent),
          };
        })()""")
        assert dom["ladders"] == 3
        assert dom["lanes"] == ["caller", "SIP", "webhook", "REST", "WebSocket", "app"]
        assert dom["rows"] >= 25 and dom["arrows"] >= 20, dom
        for label in ("POST accept", "POST webhook #1 → 200", "session.update", "response.done", "audio "):
            assert label in dom["rowText"], label
        assert dom["appRows"] >= 2, "the app's output lines are on the ladder"
        # the failing expectation is shown, in red
        assert dom["badges"][0] == "FAIL" and dom["badges"].count("PASS") == 2
        assert dom["failName"] and "transcription" in dom["failName"], dom["failName"]
        assert dom["failBg"] == "rgb(255, 235, 233)" and dom["failBorder"] == "rgb(207, 34, 46)", dom
        assert dom["failVisible"] and dom["okChips"] >= 3
        # the waveform: activity from the journal, and the true waveform of the WAV
        assert dom["waveforms"] == 3 and dom["waveWidth"] > 800 and dom["waveHeight"] > 80, dom
        assert dom["sayBars"] >= 3 and dom["chunkBars"] >= 10, dom
        assert dom["trueWaves"] == [800], dom["trueWaves"]
        assert any("caller" in t and "I need to file a claim" in t for t in dom["transcripts"]), dom["transcripts"]
        assert any("assistant" in t for t in dom["transcripts"])
        # a ladder row expands to its payload
        opened = await b.eval("""(() => {
          const row = [...document.querySelectorAll('.ladder details.ev')]
            .find(r => r.textContent.includes('POST accept'));
          row.querySelector('summary').click();
          const pre = row.querySelector('.payload pre');
          return {open: row.open, shown: pre.getBoundingClientRect().height > 20, text: pre.textContent};
        })()""")
        assert opened["open"] and opened["shown"]
        assert json.loads(opened["text"])["data"]["op"] == "accept"
        assert b.problems() == []


def test_report_screenshot(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    proc = subprocess.run([chromium_binary(), *HEADLESS, f"--user-data-dir={tmp_path / 'profile'}",
                           f"--screenshot={shot}", "--window-size=1400,2000", report.as_uri()],
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000, len(data)
    assert "Uncaught" not in proc.stderr


# ---- the renderer without a browser ---------------------------------------------------------------------


def test_wav_envelope_of_a_fixture() -> None:
    dur, lo, hi = wav_envelope(FIXTURE_WAV)
    assert dur == pytest.approx(4.5, abs=0.01)
    assert len(lo) == len(hi) == 800
    assert (lo <= hi).all() and lo.min() >= -1 and hi.max() <= 1
    assert hi.max() > 0.05, "speech is there"
    quiet = hi[: int(800 * 0.25 / 4.5)] - lo[: int(800 * 0.25 / 4.5)]
    loud = hi[int(800 * 1 / 4.5): int(800 * 3 / 4.5)] - lo[int(800 * 1 / 4.5): int(800 * 3 / 4.5)]
    assert loud.mean() > 4 * quiet.mean(), "the first 300 ms of the fixture are silence"


def test_wav_envelope_of_short_stereo_8bit_file(tmp_path: Path) -> None:
    import wave

    path = tmp_path / "tiny.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(bytes([128, 128, 255, 255, 0, 0, 128, 128]))
    dur, lo, hi = wav_envelope(path)
    assert dur == pytest.approx(4 / 8000)
    assert len(lo) == 4 and hi.max() > 0.9 and lo.min() == -1.0


def _call(entries: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"call_id": "rtc_x", "state": "ended", "entries": entries, **extra}


def test_audio_paths_from_call_fields_and_journal() -> None:
    assert audio_paths(_call([], recording="/r/heard.wav", sent_audio="/r/sent.wav")) == {
        "heard": "/r/heard.wav", "sent": "/r/sent.wav"}
    sip_rec = {"seq": 1, "t_ms": 5.0, "kind": "sip.ended", "data": {"recording": "/r/rtc_x-caller.wav"}}
    assert audio_paths(_call([sip_rec])) == {"sent": "/r/rtc_x-caller.wav"}


def test_streaming_bursts_fold_into_one_row_each() -> None:
    entries = [{"seq": 1, "t_ms": 1.0, "kind": "ws.server", "data": {"event": {"type": "response.created"}}}]
    for i in range(5):
        delta = {"type": "response.output_audio_transcript.delta", "response_id": "r1", "item_id": "i1",
                 "delta": f"w{i} "}
        entries.append({"seq": 2 + 2 * i, "t_ms": 2.0 + i, "kind": "ws.server", "data": {"event": delta}})
        entries.append({"seq": 3 + 2 * i, "t_ms": 2.5 + i, "kind": "audio.out",
                        "data": {"response_id": "r1", "ms": 100.0, "corrupt": i == 3}})
    rows = ladder_rows(entries)
    assert [r.label for r in rows] == ["response.created", "response.output_audio_transcript.delta ×5",
                                       "audio 0.50 s"]
    assert rows[1].detail == "'w0 w1 w2 w3 w4 '"
    assert rows[2].level == "err" and "1 corrupt" in rows[2].detail
    assert (rows[2].src, rows[2].dst) == ("sip", "caller")


def test_media_fault_windows_are_shaded_on_the_audio_strips() -> None:
    """A media fault's window (its fault.fired start and end) is drawn behind the tracks; a call that ends
    inside one keeps it open to the end; a fault without a window is a mark."""
    def fired(t: float, fault: str, detail: str, edge: str | None = None) -> dict[str, Any]:
        data = {"fault": fault, "detail": detail, **({"edge": edge} if edge else {})}
        return {"seq": int(t), "t_ms": t, "kind": "fault.fired", "data": data}

    entries = [fired(2000.0, "media_hold", "re-INVITE on hold (a=sendonly) for 3 s", "start"),
               fired(5000.0, "media_hold", "re-INVITE resumes (a=sendrecv) after 3 s", "end"),
               fired(6000.0, "media_silence", "silence to the caller for 3 s", "start"),
               fired(7000.0, "media_loss", "rate 0.2, seed 1: lost reply frames play as silence"),
               {"seq": 8000, "t_ms": 8000.0, "kind": "state", "data": {"before": "active", "after": "ended"}}]
    svg, _ = waveform(_call(entries), entries)
    windows = re.findall(r'<rect class="wf-fault" x="([\d.]+)" y="[\d.]+" width="([\d.]+)"[^>]*><title>([^<]*)</title>',
                         str(svg))
    assert [w[2].split(":")[0] for w in windows] == ["media_hold", "media_silence"]
    (x0, w0, title0), (x1, w1, _) = windows
    assert "2.000–5.000 s" in title0 and float(x1) > float(x0) + float(w0)  # silence starts after the resume
    assert float(w1) == pytest.approx(float(w0) * 2 / 3, rel=0.02)  # open until the call's last entry, 8 s
    assert ">media_loss</text>" in str(svg)  # no window: a mark


def test_sip_leg_rows() -> None:
    def entry(seq: int, kind: str, **data: Any) -> dict[str, Any]:
        return {"seq": seq, "t_ms": float(seq), "kind": kind, "data": data}

    rows = ladder_rows([entry(1, "call.created", transport="sip"), entry(2, "sip.invite", request_uri="sip:p@h"),
                        entry(3, "sip.sent", status=180), entry(4, "call.effect", effect="AnswerSip"),
                        entry(5, "sip.sent", status=200), entry(6, "sip.dtmf", digit="5", method="rfc2833"),
                        entry(7, "sip.sent", request="REFER", refer_to="tel:+1555"),
                        entry(8, "sip.sent", status=486), entry(9, "sip.command_failed", op="hangup", error="x")],
                       transport="sip")
    got = [(r.src, r.dst, r.label, r.level) for r in rows]
    assert got == [("sip", None, "call created", ""), ("caller", "sip", "INVITE", ""), ("sip", "caller", "180", ""),
                   ("sip", None, "effect AnswerSip", ""), ("sip", "caller", "200", ""),
                   ("caller", "sip", "DTMF 5", ""), ("sip", "caller", "REFER → tel:+1555", ""),
                   ("sip", "caller", "486", "err"), ("sip", None, "command failed", "err")]


async def test_console_check_catches_errors_and_outside_loads(tmp_path: Path) -> None:
    """The no-console-errors check is real: a script error and a blocked outside load both show up."""
    page = render_html([]).replace("</body>", '<img src="https://example.invalid/x.png" alt="">'
                                              "<script>notDefined();</script></body>")
    path = tmp_path / "broken.html"
    path.write_text(page)
    async with browser() as b:
        await b.open(path.as_uri())
        problems = "\n".join(b.problems())
    assert "notDefined" in problems, problems
    assert "Content Security Policy" in problems, problems


def test_transcripts_from_the_journal() -> None:
    def ws(seq: int, ev: dict[str, Any]) -> dict[str, Any]:
        return {"seq": seq, "t_ms": float(seq), "kind": "ws.server", "data": {"event": ev}}

    entries = [
        ws(1, {"type": "conversation.item.input_audio_transcription.completed", "transcript": "hello"}),
        ws(2, {"type": "conversation.item.input_audio_transcription.failed", "error": {"message": "403 Forbidden"}}),
        ws(3, {"type": "response.output_audio_transcript.done", "response_id": "r1", "transcript": "Hi th"}),
        ws(4, {"type": "response.done", "response": {"id": "r1", "status": "cancelled",
                                                     "status_details": {"reason": "turn_detected"}}}),
        ws(5, {"type": "response.output_text.done", "response_id": "r2", "text": "typed"}),
    ]
    got = [(t["who"], t["text"], t["error"], t["tag"]) for t in transcripts(entries)]
    assert got == [("caller", "hello", False, ""), ("caller", "transcription failed: 403 Forbidden", True, ""),
                   ("assistant", "Hi th", False, "response cancelled: turn_detected"),
                   ("assistant", "typed", False, "text")]


def test_everything_from_a_run_is_escaped() -> None:
    evil = "<script>alert(1)</script>"
    view = CallView(call_id="rtc_evil", state="ended", terminal=True, transport="virtual", created_at=0.0,
                    sip_headers=[{"name": "X-Name", "value": evil}], sip_final_status=None, refer_target=None,
                    accept_body={"instructions": evil}, end_reason=evil,
                    entries=[JournalEntry(seq=1, t_ms=0.0, kind="ws.server", data={"event": {
                        "type": "conversation.item.input_audio_transcription.completed", "transcript": evil}}),
                             JournalEntry(seq=2, t_ms=1.0, kind=evil, data={evil: evil})])
    from harness.expect import Check

    result = ScenarioResult(evil, evil, False, "failed: " + evil, 1.0,
                            checks=[Check(evil, False, evil, {"x": evil}, evil)], calls=[view],
                            app_output=[(0.1, f"[rtc_evil] {evil}")], notes=[evil], description=evil)
    crashed = ScenarioResult(evil, evil, False, f"error: app crashed: {evil}", 0.5, app_output=[(0.0, evil)])
    page = render_html([result, crashed])
    assert "<script>alert" not in page
    assert page.count("<script>") == 1  # the report's own
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "no call reached the mock" in page and "error: app crashed: &lt;script&gt;" in page


def test_page_is_self_contained(results: list[ScenarioResult]) -> None:
    page = render_html(results)
    refs = re.findall(r"\s(?:src|href|xlink:href|action|srcset)\s*=\s*[\"']([^\"']*)", page)
    assert refs and all(r.startswith(("#", "data:")) for r in refs), [r for r in refs if not r.startswith("#")]
    assert "url(" not in page.split("</style>")[0] and "@import" not in page
    # and the browser enforces it: a stray load is a console error (see the test below)
    assert "default-src 'none'" in html.unescape(page)


def test_rtsip_run_writes_the_html_report(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(FORUM / "05_hangup_after_accept.yaml"),
                           "-k", "fixed", "--html", str(out)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    page = out.read_text()
    assert "hangup-right-after-accept[fixed]" in page and 'class="ladder"' in page and "svg class=\"waveform\"" in page


# ---- the load report ----------------------------------------------------------------------------------


def _load_run(tmp_path: Path) -> Path:
    """A load report of a made-up run through the real plan and result types (no calls placed): 40 calls
    over 10 s, two failed, CPU and memory sampled every half second, and hostile text from the run."""
    from harness.load import LoadOptions, LoadResult, plan
    from harness.load_metrics import CallRecord
    from harness.load_report import write_reports

    p = plan(LoadOptions(scenario=ROOT / "scenarios" / "load" / "one_turn.yaml", calls=40, concurrency=8, rate=4.0,
                         progress=False))
    t0 = 1_700_000_000.0
    result = LoadResult(plan=p, started_at=t0, ended_at=t0 + 14, placed=40, notes=["<script>alert(1)</script>"],
                        cpu={"mock_cpu_s": 6.0, "app_cpu_s": 3.0, "load_cpu_s": 1.5})
    for i in range(40):
        start, ok = t0 + i / 4, i not in (7, 23)
        result.records.append(CallRecord(
            index=i, call_id=f"rtc_{i}", start=start, end=start + 3 + (i % 5) / 4, ok=ok, state="ended",
            reason=None if ok else "<b>webhook timeout</b>",
            metrics={"webhook_to_accept_ms": [[start + 0.1, 20.0 + i]],
                     "speech_end_to_audio_ms": [[start + 2, 300.0 + 5 * i]]}))
    for k in range(29):
        result.samples.append({"t": t0 + k / 2, "active": 8.0, "done": k * 1.4, "mock_cpu_s": k * 0.2,
                               "mock_rss_mb": 80 + k / 4, "app_cpu_s": k * 0.1, "app_rss_mb": 45.0})
    path = tmp_path / "load.html"
    write_reports(result, csv_path=None, json_path=None, html_path=path)
    return path


def test_load_report_shows_labels_with_units_not_keys(tmp_path: Path) -> None:
    from harness.load_report import LABELS

    page = _load_run(tmp_path).read_text()
    text = html.unescape(re.sub(r"<[^>]+>", " ", page.split("<body>")[1]))
    for key in ("mock_cpu_pct_per_active_call", "mock_rss_mb_max", "call_seconds", "mock_cpu_s", "concurrency"):
        label, unit = LABELS[key]
        assert re.search(rf"{re.escape(label)}\s+[\d.,]+\s+{re.escape(unit)}", text), (key, label)
    keys = [k for k in LABELS if "_" in k]  # the JSON report's keys; the page has labels instead
    assert keys and not [k for k in keys if k in text], [k for k in keys if k in text]
    assert "p95 (ms)" in text and "webhook sent → accept received" in text
    # a run's text is escaped, and the page runs and loads nothing
    assert "<script" not in page and "<b>webhook" not in page and "&lt;b&gt;webhook timeout&lt;/b&gt;" in page
    assert "default-src 'none'" in html.unescape(page)


def test_nice_ticks_are_round_and_cover_the_data() -> None:
    from harness.report.charts import nice_ticks

    assert nice_ticks(47.3) == [0, 10, 20, 30, 40, 50]
    assert nice_ticks(0.42) == [0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert nice_ticks(1234, 5) == [0, 250, 500, 750, 1000, 1250]
    assert nice_ticks(0) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(12, whole=True) == [0, 5, 10, 15] and nice_ticks(3, whole=True) == [0, 1, 2, 3]
    assert nice_ticks(29.5, 6, bottom=-2.3) == [-5, 0, 5, 10, 15, 20, 25, 30]  # memory sampled before the first call


async def test_load_report_charts_in_chromium(tmp_path: Path) -> None:
    """Each chart has a title, both axes labelled (time in s, the unit on y), round ticks and its data inside."""
    path = _load_run(tmp_path)
    async with browser() as b:
        await b.open(path.as_uri())
        charts = await b.eval("""[...document.querySelectorAll('svg.chart')].map(svg => {
          const box = svg.getBoundingClientRect(), vb = svg.viewBox.baseVal;
          const marks = [...svg.querySelectorAll('circle')].map(c => c.getBoundingClientRect());
          return {
            title: svg.querySelector('text.title').textContent, width: box.width,
            axes: [...svg.querySelectorAll('text.axis-label')].map(t => t.textContent),
            ticks: [...svg.querySelectorAll('text.tick')].map(t => t.textContent),
            points: marks.length,
            inside: marks.every(m => m.left >= box.left && m.right <= box.right && m.top >= box.top
                                     && m.bottom <= box.bottom),
            tooltip: (svg.querySelector('circle title') || {}).textContent,
          };
        })""")
        assert b.problems() == []
    titles = [c["title"] for c in charts]
    assert titles == ["Concurrency: calls in progress", "Calls per 1 s interval", "webhook sent → accept received",
                      "caller speech end → first reply audio", "CPU (% of one core)", "Memory (resident set size)"]
    units = {c["title"]: c["axes"][1] for c in charts}
    assert units["webhook sent → accept received"] == "ms" and units["CPU (% of one core)"] == "% of one core"
    assert units["Memory (resident set size)"] == "MB"
    for c in charts:
        assert c["axes"][0] == "time since the first call (s)" and c["width"] > 400, c
        assert c["points"] > 5 and c["inside"], c
        assert all(re.fullmatch(r"-?[\d,.]+", t) for t in c["ticks"]), c["ticks"]
        assert c["tooltip"] and " at " in c["tooltip"], c


def test_load_report_does_not_import_the_load_runner() -> None:
    """harness.load imports the reports; the reports read a run through a protocol, so no import cycle."""
    code = "import sys, harness.load_report; assert 'harness.load' not in sys.modules, 'cycle'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
