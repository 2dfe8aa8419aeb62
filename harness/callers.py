"""The two kinds of caller a scenario can place: virtual (control API) and real SIP (softphone).

Both do the same things (speak a file, dial digits, hang up), so the runner drives either through
the one step driver the load callers use too (:mod:`harness.caller_steps`), and the app under test
cannot tell them apart on its side.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from pathlib import Path
from typing import Any, Protocol

from audio_fixtures import FixtureNotFound
from audio_fixtures import fixture as find_fixture
from mock_api import audio
from mock_api.client import MockClient
from sipworker.ipc import name_addr

from .caller_steps import TRAILING_SILENCE_MS
from .scenario import CallSpec, resolve_audio
from .softphone import Softphone, SoftphoneCall, SoftphoneError


class CallerError(RuntimeError):
    """A call could not be placed or matched to the mock's call."""


class Caller(Protocol):
    call_id: str

    async def say(self, ref: str) -> None: ...
    async def dtmf(self, digits: str) -> None: ...
    async def hold(self, seconds: float) -> None: ...
    async def new_ssrc(self) -> None: ...
    async def hangup(self) -> None: ...
    def media(self) -> dict[str, Any]: ...


class VirtualCaller:
    """No SIP leg: the mock feeds the audio into the session, paced like RTP (``speed`` × real time)."""

    def __init__(self, control: MockClient, call_id: str, base: Path, speed: float) -> None:
        self.control, self.call_id, self.base, self.speed = control, call_id, base, speed
        self.sent: list[str] = []

    @classmethod
    async def place(cls, control: MockClient, spec: CallSpec, base: Path) -> VirtualCaller:
        from_ = name_addr(caller_of(spec)[0], spec.display_name) if spec.display_name else spec.from_
        call_id = await control.start_call(from_=from_, to=spec.to, headers=spec.headers, faults=spec.faults)
        return cls(control, call_id, base, spec.speed)

    async def say(self, ref: str) -> None:
        try:
            find_fixture(ref)  # a committed fixture: the mock loads it by name
            source: dict[str, Any] = {"fixture": ref}
        except FixtureNotFound:
            source = {"path": str(resolve_audio(ref, self.base))}
        await self.control.say(self.call_id, source.get("fixture"), path=source.get("path"), speed=self.speed,
                               wait=True, trailing_silence_ms=TRAILING_SILENCE_MS)
        self.sent.append(str(resolve_audio(ref, self.base)))

    async def dtmf(self, digits: str) -> None:
        await self.control.dtmf(self.call_id, digits)

    async def hold(self, seconds: float) -> None:
        raise CallerError("a virtual call cannot hold: hold_ms needs mode: sip")  # refused at load (CallSpec)

    async def new_ssrc(self) -> None:
        raise CallerError("a virtual call sends no RTP: new_ssrc needs mode: sip")  # refused at load (CallSpec)

    async def hangup(self) -> None:
        view = await self.control.call(self.call_id)
        if not view.terminal:
            await self.control.caller_hangup(self.call_id)

    def media(self) -> dict[str, Any]:
        return {"sent_audio": self.sent}


class SipCaller:
    """A real SIP/TLS call from the softphone to the mock's SIP ingress."""

    def __init__(self, phone_call: SoftphoneCall, call_id: str, base: Path) -> None:
        self.phone_call, self.call_id, self.base = phone_call, call_id, base
        self.sent: list[str] = []

    @classmethod
    async def place(cls, phone: Softphone, uri: str, control: MockClient, spec: CallSpec, base: Path,
                    timeout: float = 10.0) -> SipCaller:
        """Dial ``uri`` as the scenario's caller: its ``from`` and ``display_name`` in the From, its ``to``
        (when set; else ``uri``) in the To."""
        from_uri, name = caller_of(spec)
        to_uri = spec.to if "to" in spec.model_fields_set else None
        try:
            call = await phone.call(uri, headers=spec.headers, from_uri=from_uri, display_name=name, to_uri=to_uri)
        except ValueError as exc:  # a from/to the softphone cannot send
            raise CallerError(f"cannot place the SIP call: {exc}") from None
        call_id = await _mock_call_for(control, call, timeout)
        return cls(call, call_id, base)

    async def say(self, ref: str) -> None:
        path = resolve_audio(ref, self.base)
        await self.phone_call.play(path)
        ms = audio.duration_ms(audio.load_audio(path, 8000), 8000)
        await asyncio.sleep((ms + TRAILING_SILENCE_MS) / 1000)
        self.sent.append(str(path))

    async def dtmf(self, digits: str) -> None:
        await self.phone_call.send_dtmf(digits)

    async def hold(self, seconds: float) -> None:
        await self.phone_call.hold_for(seconds)

    async def new_ssrc(self) -> None:
        with contextlib.suppress(SoftphoneError):  # the call has ended (just now): nothing to send
            await self.phone_call.new_ssrc()

    async def hangup(self) -> None:
        if not self.phone_call.is_ended:
            await self.phone_call.hangup()
            await self.phone_call.ended(timeout=10)

    def media(self) -> dict[str, Any]:
        c = self.phone_call
        return {"sent_audio": self.sent, "recording": c.recording, "final_status": c.final_status,
                "time_to_first_audio_ms": c.time_to_first_audio_ms, "marks": dict(c.marks),
                "refer_target": c.refer_target, "ended_by": c.ended_by}


def caller_of(spec: CallSpec) -> tuple[str, str | None]:
    """The caller's URI and display name: ``from`` may carry the name itself (``"Alice" <sip:...>``);
    ``display_name`` wins."""
    value = spec.from_.strip()
    start, end = value.find("<"), value.rfind(">")
    if start < 0 or end < start:
        return value, spec.display_name
    name = value[:start].strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = re.sub(r"\\(.)", r"\1", name[1:-1])  # quoted-pair
    return value[start + 1:end], spec.display_name or name or None


async def _mock_call_for(control: MockClient, call: SoftphoneCall, timeout: float) -> str:
    """The mock's call_id for our INVITE: the call whose Call-ID header is ours."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for view in await control.calls(entries=False):
            if any(h.name.lower() == "call-id" and h.value == call.sip_call_id for h in view.sip_headers):
                return view.call_id
        if call.is_ended:
            raise CallerError(f"the SIP call ended with {call.final_status} {call.final_reason} before the mock "
                               "registered it")
        await asyncio.sleep(0.05)
    raise CallerError(f"the mock never registered SIP call {call.sip_call_id}")
