"""Failure mode 29: a Contact that repeats a URI parameter gets 403 and no webhook (fault strict_contact).

The report's FreeSWITCH sent ``;transport=tls;transport=tls``. pjsip keeps one ``transport`` parameter when it
prints a URI, so the softphone repeats another one (``;ob;ob``); the mock's rule is about any parameter, and its
parsing is checked on the report's own Contact below. Real SIP/TLS calls over 127.0.0.1.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from harness.softphone import Softphone
from mock_api.client import MockClient
from mock_api.running import RunningMock
from sipworker.sipmsg import repeated_uri_params, uri_param_names
from tests.helpers import until
from tests.sip_helpers import App, Receiver

REPEATS = ";ob;ob"


def test_repeated_parameters_are_read_from_the_uri_only() -> None:
    report = "<sip:mod_sofia@203.0.113.5:5061;transport=tls;transport=tls>"
    assert repeated_uri_params(report) == ["transport"]
    assert repeated_uri_params('"SBC" <sip:a@h:5061;Transport=TLS;ob;transport=tls>;expires=60') == ["transport"]
    assert repeated_uri_params("<sip:a@h;x=1;x=2;y>") == ["x"]
    assert repeated_uri_params("<sip:a@h;transport=tls;ob>;ob") == []  # the second ;ob is the header's
    assert repeated_uri_params("sip:a@h;transport=tls;transport=tls") == []  # no <>: header parameters (RFC 3261)
    assert uri_param_names("<sip:a@h;lr;maddr=x?Subject=hi;lr>") == ["lr", "maddr"]  # URI headers after "?"
    assert repeated_uri_params("<sip:+1555;isub=1@h;isub=2>") == []  # the user part's ";" is not a parameter


async def test_the_softphone_refuses_what_is_not_uri_parameters(sip_phone: Softphone) -> None:
    for bad in ("ob", ";ob>", ";a b", ";x=1\r\nVia: x", ""):
        with pytest.raises(ValueError, match="contact_params"):
            await sip_phone.call("sip:proj_x@127.0.0.1", contact_params=bad)
    assert sip_phone.calls == []  # refused before any INVITE


async def refused_story(mock: RunningMock) -> list[tuple[str, dict[str, Any]]]:
    return [(e.kind, e.data) for e in mock.server.journal.entries(None) if e.kind in ("fault.fired", "sip.rejected")]


async def test_strict_contact_answers_403_and_sends_no_webhook(
        sip_stack: tuple[RunningMock, Receiver, MockClient], sip_phone: Softphone) -> None:
    mock, receiver, control = sip_stack
    assert mock.sip is not None
    await control.configure(faults=[{"name": "strict_contact"}])
    receiver.app = App(mock, action="hangup")
    refused = await sip_phone.call(mock.sip.uri(), contact_params=REPEATS)
    await refused.ended(timeout=15)
    assert (refused.final_status, refused.was_answered) == (403, False)
    (fired, fired_data), (rejected, rejected_data) = await until(lambda: refused_story(mock),
                                                                 what="the refusal in the journal")
    assert (fired, fired_data["fault"], rejected) == ("fault.fired", "strict_contact", "sip.rejected")
    assert re.fullmatch(r"the Contact <sip:softphone@127\.0\.0\.1:\d+;transport=tls;ob;ob> repeats ;ob: 403, no call",
                        fired_data["detail"]), fired_data
    assert {k: rejected_data[k] for k in ("reason", "status", "user")} == {
        "reason": "Contact repeats ;ob", "status": 403, "user": "proj_rtsip"}
    assert await control.calls() == [] and receiver.deliveries == []  # no call, so no webhook
    # the rule is specific: the same mock takes a Contact that repeats nothing
    taken = await sip_phone.call(mock.sip.uri(), contact_params=";ob")
    assert await taken.answered(timeout=15)
    await taken.hangup()
    await taken.ended(timeout=15)
    assert len(receiver.deliveries) == 1


async def test_without_the_fault_a_repeated_parameter_is_taken(
        sip_stack: tuple[RunningMock, Receiver, MockClient], sip_phone: Softphone) -> None:
    mock, receiver, control = sip_stack
    assert mock.sip is not None
    receiver.app = App(mock, action="hangup")
    call = await sip_phone.call(mock.sip.uri(), contact_params=REPEATS)
    assert await call.answered(timeout=15)
    await call.hangup()
    await call.ended(timeout=15)
    assert len(await control.calls()) == 1 and len(receiver.deliveries) == 1
    assert await refused_story(mock) == []
