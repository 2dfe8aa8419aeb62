"""Models of today and their retirement: the lists, the dates' boundaries, the refusal, the report lines."""

from __future__ import annotations

import datetime as dt
import inspect
import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from openai import AsyncOpenAI, NotFoundError
from openai.types.realtime import RealtimeErrorEvent
from pydantic import ValidationError
from rich.console import Console

from harness.commands.run import _summary
from harness.journal_view import JournalView
from harness.report.html import render_html
from harness.report.json_report import write_json
from harness.report.model_notices import call_notices, text_lines
from harness.runner import ScenarioResult
from mock_api import errors
from mock_api import journal_entries as je
from mock_api import models as m
from mock_api.control_models import CallView, JournalEntry
from mock_api.faults import Fault
from mock_api.journal import Journal
from mock_api.realtime import events as ev
from tests.realtime_fixtures import events_until

DAY = dt.timedelta(days=1)
TODAY = dt.date(2026, 12, 3)


# ---- the lists ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(m.RETIREMENTS))
def test_a_listed_model_retires_after_its_shutdown_day(name: str) -> None:
    r = m.RETIREMENTS[name]
    before, on, after = (m.status(name, r.shutdown + k * DAY) for k in (-1, 0, 1))
    assert (before.state, before.days_left) == ("retiring", 1)
    assert (on.state, on.days_left) == ("retiring", 0)  # the announced date is its last day
    assert (after.state, after.days_left) == ("retired", -1)
    assert before.retirement == on.retirement == after.retirement == r and after.family == r.family


@pytest.mark.parametrize(("family", "name"), [(f, n) for f, names in m.CURRENT.items() for n in names])
def test_every_current_model_stays_current(family: m.Family, name: str) -> None:
    for day in (TODAY, dt.date(2027, 1, 21), dt.date(2030, 1, 1)):
        found = m.status(name, day)
        assert (found.state, found.family, found.retirement, found.days_left) == ("current", family, None, None)


NOT_RETIRING = {  # SDK 3.57's names with no shutdown note and a settled status
    "realtime": {"gpt-realtime-1.5", "gpt-realtime-2", "gpt-realtime-2.1", "gpt-realtime-2.1-mini", "gpt-audio-1.5"},
    "live": {"gpt-live-1", "gpt-live-1.1"},
    "transcription": {"gpt-transcribe", "gpt-live-transcribe", "gpt-realtime-whisper"},
}


@pytest.mark.parametrize("family", sorted(NOT_RETIRING))
def test_the_current_list_is_what_the_sdk_names_less_the_shutdown_and_unsettled_tables(family: m.Family) -> None:
    current = set(m.CURRENT[family])
    assert m.DEFAULTS[family] in current  # even with an SDK too old to name it
    assert NOT_RETIRING[family] & m.SDK_NAMES[family] <= current  # read from the installed SDK
    assert not current & (set(m.RETIREMENTS) | set(m.UNSETTLED))


def test_unsettled_and_unknown_names_are_unlisted_never_current() -> None:
    preview = m.status("gpt-4o-realtime-preview-2025-06-03", TODAY)
    assert (preview.state, preview.family) == ("unlisted", "realtime")
    azure = m.status("my-azure-deployment", TODAY)
    assert (azure.state, azure.family, azure.retirement) == ("unlisted", None, None)


def test_every_name_the_sdk_lists_is_classified() -> None:
    for family, names in m.SDK_NAMES.items():
        for name in names:
            assert m.status(name, TODAY).family == family, name


def _announced(path: str) -> dict[str, dt.date]:
    """The names and shutdown dates a docstring of the installed SDK announces (none in an older SDK)."""
    import importlib

    module = importlib.import_module("openai." + path.removeprefix("openai/").removesuffix(".py").replace("/", "."))
    source = inspect.getsource(module)
    out: dict[str, dt.date] = {}
    for names, day in re.findall(r"Deprecated values:\s*-\s*(.*?):\s*Announced shutdown date:\s*(\d{4}-\d\d-\d\d)",
                                 source, re.S):
        for name in re.findall(r'"([^"]+)"', names):
            out[name] = dt.date.fromisoformat(day)
    return out


@pytest.mark.parametrize("path", sorted({r.basis for r in m.RETIREMENTS.values()}))
def test_the_table_says_what_the_installed_sdk_announces(path: str) -> None:
    """A newer SDK that announces another shutdown fails here until the table has it."""
    announced = _announced(path)
    if not announced:
        pytest.skip(f"the installed SDK's {path} predates the announcement")
    assert announced == {name: r.shutdown for name, r in m.RETIREMENTS.items() if r.basis == path}


def test_literal_names_reads_through_unions_and_optionals() -> None:
    from typing import Literal, Optional, Union

    sdk_style = Optional[Union[str, Literal["a", "b"], Literal["c"]]]  # noqa: UP007, UP045 - as the SDK spells it
    assert m.literal_names(sdk_style) == {"a", "b", "c"}
    assert m.literal_names(str) == frozenset()


# ---- refusing ---------------------------------------------------------------------------------------------


def policy(*faults: str | dict[str, Any]) -> m.RetiredModelPolicy:
    return m.RetiredModelPolicy.of([Fault.model_validate(f) for f in faults])


def test_without_the_fault_nothing_is_refused_only_journaled() -> None:
    shutdown = m.RETIREMENTS["gpt-realtime"].shutdown
    assert m.check("gpt-realtime", "session", shutdown, policy()).refusal is None
    late = m.check("gpt-realtime", "session", shutdown + DAY, policy())
    assert late.refusal is None and late.entry is not None and late.entry.days_left == -1
    real = policy({"name": "model_retired", "when": "after_shutdown"})  # what the real service does past the day
    assert m.check("gpt-realtime", "session", shutdown, real).refusal is None
    assert m.check("gpt-realtime", "session", shutdown + DAY, real).refusal == m.RetiredModelError()


def test_the_fault_refuses_a_listed_model_before_its_day_or_only_after_it() -> None:
    shutdown = m.RETIREMENTS["whisper-1"].shutdown
    assert m.check("whisper-1", "transcription", TODAY, policy("model_retired")).refusal is not None
    assert m.check(m.DEFAULT_TRANSCRIPTION, "transcription", TODAY, policy("model_retired")).refusal is None
    later = policy({"name": "model_retired", "when": "after_shutdown"})
    assert m.check("whisper-1", "transcription", shutdown, later).refusal is None
    assert m.check("whisper-1", "transcription", shutdown + DAY, later).refusal is not None


def test_the_fault_can_judge_the_dates_as_of_another_day() -> None:
    rehearsal = policy({"name": "model_retired", "when": "after_shutdown", "today": "2027-01-21"})
    assert rehearsal.today == dt.date(2027, 1, 21)
    found = m.check("gpt-realtime", "session", TODAY, rehearsal)  # the real day is ignored
    assert found.refusal is not None and found.entry is not None and found.entry.days_left == -1
    assert m.check("whisper-1", "transcription", TODAY, rehearsal).refusal is None  # its day is 2027-02-26
    assert policy("model_retired").today is None


def test_the_default_error_is_model_not_found_and_every_part_is_configurable() -> None:
    err = policy("model_retired").error
    assert err.status == 404
    assert err.envelope("gpt-realtime") == {"error": {
        "message": "The model `gpt-realtime` does not exist or you do not have access to it.",
        "type": "invalid_request_error", "param": None, "code": "model_not_found"}}
    custom = policy({"name": "model_retired", "status": 410, "type": "invalid_request_error", "code": "model_retired",
                     "message": "{model} was shut down"}).error
    assert custom == m.RetiredModelError(410, "invalid_request_error", "model_retired", "{model} was shut down")
    assert custom.error("gpt-realtime-mini")["message"] == "gpt-realtime-mini was shut down"


@pytest.mark.parametrize("bad", [{"when": "soon"}, {"status": 200}, {"status": 404.5}, {"reason": "x"},
                                 {"today": "2027-1-21"}, {"today": "tomorrow"}, {"today": 20270121}])
def test_the_faults_parameters_are_checked_on_receipt(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Fault.model_validate({"name": "model_retired", **bad})


def test_the_websocket_error_parses_with_the_sdk() -> None:
    err = policy("model_retired").error
    fields = err.error("gpt-realtime")
    event = ev.error(fields["code"], fields["message"], param=fields["param"], type_=fields["type"])
    parsed = RealtimeErrorEvent.model_validate(event)
    assert (parsed.error.code, parsed.error.type) == ("model_not_found", "invalid_request_error")


@pytest.fixture
async def refusing_server() -> AsyncIterator[str]:
    """A real HTTP server answering every accept the way the mock's accept answers a refused model."""
    err = policy({"name": "model_retired", "status": 404}).error

    async def accept(request: web.Request) -> web.Response:
        body = await request.json()
        return errors.rest_error(err.status, err.message_for(body["model"]), type=err.type, code=err.code)

    app = web.Application()
    app.router.add_post("/v1/realtime/calls/{call_id}/accept", accept)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


async def test_the_sdk_raises_not_found_with_the_code_on_a_refused_accept(refusing_server: str) -> None:
    async with AsyncOpenAI(base_url=refusing_server, api_key="sk-test", max_retries=0) as client:
        with pytest.raises(NotFoundError) as caught:
            await client.realtime.calls.accept("rtc_1", type="realtime", model="gpt-realtime")
    assert caught.value.code == "model_not_found" and caught.value.status_code == 404
    assert "The model `gpt-realtime` does not exist" in caught.value.message


# ---- what the mock journals ----------------------------------------------------------------------------------


def test_an_accept_naming_two_retiring_models_gives_two_entries_and_a_current_one_none() -> None:
    body = {"type": "realtime", "model": "gpt-realtime",
            "audio": {"input": {"transcription": {"model": "whisper-1"}}}}
    checks = m.check_session(body, TODAY, policy(), via="accept")
    assert [(c.where, c.status.model, c.refusal) for c in checks] == [
        ("session", "gpt-realtime", None), ("transcription", "whisper-1", None)]
    assert [c.entry.to_data() if c.entry else None for c in checks] == [
        {"model": "gpt-realtime", "where": "session", "shutdown": "2027-01-20", "replacement": "gpt-realtime-2.1",
         "days_left": 48, "refused": False, "via": "accept"},
        {"model": "whisper-1", "where": "transcription", "shutdown": "2027-02-26",
         "replacement": "gpt-live-transcribe", "days_left": 85, "refused": False, "via": "accept"}]
    current = m.check_session({"model": m.DEFAULT_REALTIME, "audio": {"input": {"transcription": None}}}, TODAY,
                              policy("model_retired"))
    assert [(c.entry, c.refusal) for c in current] == [(None, None)]
    assert m.first_refusal(m.check_session(body, TODAY, policy("model_retired"))) is not None


def test_the_entry_is_a_registered_kind_the_journal_keeps_and_parses_back() -> None:
    entry = m.check("gpt-realtime-mini", "session", TODAY, policy("model_retired"), via="?model=").entry
    assert entry is not None and entry.refused and entry.replacement == "gpt-realtime-2.1-mini"
    journal = Journal()
    journal.add("rtc_1", entry)
    (kept,) = journal.entries("rtc_1", "model.retiring")
    assert kept.typed == entry and je.parse("model.retiring", entry.to_data()) == entry


# ---- the reports --------------------------------------------------------------------------------------------


def _call(call_id: str, *entries: je.EntryData) -> CallView:
    return CallView(call_id=call_id, state="ended", terminal=True, transport="virtual", created_at=0.0,
                    sip_headers=[], sip_final_status=None, refer_target=None, accept_body=None, end_reason="hangup",
                    entries=[JournalEntry(seq=i, t_ms=10.0 * i, kind=e.journal_kind, data=e.to_data())
                             for i, e in enumerate(entries)])


def _entry(model: str, where: m.Where, day: dt.date = TODAY, fault: str | None = None) -> je.ModelRetiring:
    found = m.check(model, where, day, policy(*([fault] if fault else [])), via="accept").entry
    assert found is not None
    return found


def _results() -> list[ScenarioResult]:
    used = _call("rtc_old", _entry("gpt-realtime", "session"),
                 _entry("gpt-realtime", "session", TODAY, "model_retired"),
                 _entry("whisper-1", "transcription", dt.date(2027, 3, 1)))
    return [ScenarioResult(name="pinned", file="pinned.yaml", passed=True, verdict="passed", seconds=1.0,
                           calls=[used, _call("rtc_new")])]


def test_one_line_per_call_and_model_with_the_date_and_the_replacement() -> None:
    assert text_lines(_results()) == [
        "pinned: call rtc_old: gpt-realtime retires on 2027-01-20: move to gpt-realtime-2.1 (the mock refused it)",
        "pinned: call rtc_old: whisper-1 (input transcription model) retired on 2027-02-26: move to "
        "gpt-live-transcribe",  # past its day, but without the fault only journaled
    ]
    only_warned = _call("rtc_x", _entry("gpt-audio-mini", "session"))
    assert [n.line for n in call_notices("rtc_x", JournalView.of_call(only_warned))] == [
        "gpt-audio-mini retires on 2027-01-20: no replacement is named"]


def test_the_text_summary_prints_the_lines() -> None:
    out = io.StringIO()
    _summary(_results(), Console(file=out, width=300, color_system=None))
    printed = out.getvalue()
    assert "model pinned: call rtc_old: gpt-realtime retires on 2027-01-20: move to gpt-realtime-2.1" in printed
    assert printed.count("retire") == 2


def test_the_html_report_highlights_the_call_that_used_it() -> None:
    page = render_html(_results())
    old, new = page.split('<section class="call" data-call-id="rtc_new">')
    assert '<section class="call" data-call-id="rtc_old">' in old
    assert old.count('<div class="model-notice">') == 2 and '<div class="model-notice">' not in new
    assert ("<b>model</b> gpt-realtime retires on 2027-01-20: move to gpt-realtime-2.1 (the mock refused it)"
            in old)


def test_the_json_report_lists_the_notices(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    write_json(_results(), path)
    (scenario,) = json.loads(path.read_text())["scenarios"]
    assert [(n["call_id"], n["model"], n["days_left"], n["refused"]) for n in scenario["model_notices"]] == [
        ("rtc_old", "gpt-realtime", 48, True), ("rtc_old", "whisper-1", -3, False)]


def test_the_day_is_the_utc_calendar_day_of_the_wall_clock() -> None:
    last_second = dt.datetime(2027, 1, 20, 23, 59, 59, tzinfo=dt.UTC).timestamp()
    assert m.today_utc(last_second) == dt.date(2027, 1, 20)
    assert m.status("gpt-realtime", m.today_utc(last_second + 1)).state == "retired"


# ---- through the mock (the accept, session.update and ?model= adapters) ------------------------------------

WARN_ONLY = {"name": "model_retired", "when": "after_shutdown", "today": TODAY.isoformat()}  # whatever the date


async def test_an_accept_naming_retiring_models_is_served_and_journaled(client: AsyncOpenAI, control: Any) -> None:
    call_id = await control.start_call(faults=[WARN_ONLY])
    await client.realtime.calls.accept(call_id, type="realtime", model="gpt-realtime",
                                       audio={"input": {"transcription": {"model": "whisper-1"}}})
    view = await control.call(call_id)
    assert view.state == "active"
    warned = [(e.data["model"], e.data["days_left"], e.data["refused"], e.data["via"])
              for e in view.of_kind("model.retiring")]
    assert warned == [("gpt-realtime", 48, False, "accept"), ("whisper-1", 85, False, "accept")]
    assert [n.line for n in call_notices(call_id, JournalView.of_call(view))] == [
        "gpt-realtime retires on 2027-01-20: move to gpt-realtime-2.1",
        "whisper-1 (input transcription model) retires on 2027-02-26: move to gpt-live-transcribe"]


async def test_the_fault_refuses_the_accept_and_the_call_keeps_ringing(client: AsyncOpenAI, control: Any) -> None:
    call_id = await control.start_call(faults=["model_retired"])
    with pytest.raises(NotFoundError) as caught:
        await client.realtime.calls.accept(call_id, type="realtime", model="gpt-realtime-mini")
    assert caught.value.code == "model_not_found"
    assert caught.value.body == {"message": "The model `gpt-realtime-mini` does not exist or you do not have access "
                                 "to it.", "type": "invalid_request_error", "param": None, "code": "model_not_found"}
    assert (await control.call(call_id)).state == "ringing"
    await client.realtime.calls.accept(call_id, type="realtime", model=m.DEFAULT_REALTIME)  # the fix is served
    view = await control.call(call_id)
    assert view.state == "active" and [e.data["refused"] for e in view.of_kind("model.retiring")] == [True]


async def test_a_session_update_naming_a_listed_transcriber_gets_the_error_event(client: AsyncOpenAI,
                                                                                 control: Any) -> None:
    call_id = await control.start_call(faults=[{"name": "model_retired", "code": "model_retired"}])
    await client.realtime.calls.accept(call_id, type="realtime", model=m.DEFAULT_REALTIME)
    async with client.realtime.connect(call_id=call_id) as conn:
        await conn.session.update(session={"type": "realtime", "audio": {"input": {
            "transcription": {"model": "gpt-4o-transcribe"}}}}, event_id="evt_upd")
        errors_seen = [e for e in await events_until(conn, "error") if e.type == "error"]
    assert [(e.error.code, e.error.event_id) for e in errors_seen] == [("model_retired", "evt_upd")]
    view = await control.call(call_id)
    assert [(e.data["model"], e.data["via"]) for e in view.of_kind("model.retiring")] == [
        ("gpt-4o-transcribe", "session.update")]


async def test_a_model_socket_for_a_listed_model_is_refused_after_the_upgrade(mock: Any) -> None:
    mock.server.config = mock.server.config.model_copy(update={"faults": [Fault(name="model_retired")]})
    client = AsyncOpenAI(api_key="sk-test-key", base_url=mock.base_url, max_retries=0)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        event = await conn.recv()
    await client.close()
    assert event.type == "error" and event.error.code == "model_not_found"
    assert [e.data["via"] for e in mock.server.journal.entries(None, "model.retiring")] == ["?model="]
