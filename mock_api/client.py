"""A small typed client for the mock's ``/_mock/`` control API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import aiohttp

from .control_models import CallList, CallView, StartCallResponse
from .faults import Fault


class MockControlError(RuntimeError):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


class MockClient:
    """``async with MockClient("http://127.0.0.1:8765") as mock: call_id = await mock.start_call()``."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/").removesuffix("/v1")
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> MockClient:
        self._http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _req(self, method: str, path: str, json: Any = None) -> Any:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        async with self._http.request(method, self.url + path, json=json) as resp:
            body = await resp.json(content_type=None)
            if resp.status >= 400:
                raise MockControlError(resp.status, body)
            return body

    async def start_call(self, *, from_: str | None = None, to: str | None = None,
                         headers: dict[str, str] | list[tuple[str, str]] | None = None,
                         faults: Sequence[str | Fault | dict[str, Any]] | None = None,
                         script: dict[str, Any] | None = None, media_security: str | None = None) -> str:
        body: dict[str, Any] = {}
        if from_ is not None:
            body["from"] = from_
        if to is not None:
            body["to"] = to
        if headers is not None:
            body["headers"] = headers if isinstance(headers, dict) else [list(p) for p in headers]
        if faults is not None:
            body["faults"] = [f.model_dump() if isinstance(f, Fault) else f for f in faults]
        if script is not None:
            body["script"] = script
        if media_security is not None:
            body["media_security"] = media_security
        return StartCallResponse.model_validate(await self._req("POST", "/_mock/calls", body)).call_id

    async def calls(self, entries: bool = True) -> list[CallView]:
        path = "/_mock/calls" if entries else "/_mock/calls?entries=0"
        return CallList.model_validate(await self._req("GET", path)).calls

    async def call(self, call_id: str) -> CallView:
        return CallView.model_validate(await self._req("GET", f"/_mock/calls/{call_id}"))

    async def caller_hangup(self, call_id: str) -> CallView:
        return CallView.model_validate(await self._req("POST", f"/_mock/calls/{call_id}/caller_hangup"))

    async def say(self, call_id: str, fixture: str | None = None, *, path: str | None = None, speed: float = 1.0,
                  trailing_silence_ms: int = 800, wait: bool = False) -> float:
        """The virtual caller speaks; returns the audio duration in ms."""
        body: dict[str, Any] = {"speed": speed, "trailing_silence_ms": trailing_silence_ms, "wait": wait}
        body.update({"fixture": fixture} if fixture is not None else {"path": path})
        result = await self._req("POST", f"/_mock/calls/{call_id}/say", body)
        return float(result["ms"])

    async def dtmf(self, call_id: str, digits: str) -> None:
        await self._req("POST", f"/_mock/calls/{call_id}/dtmf", {"digits": digits})

    async def reset(self) -> None:
        await self._req("POST", "/_mock/reset")

    async def configure(self, **patch: Any) -> dict[str, Any]:
        if "faults" in patch:
            patch["faults"] = [f.model_dump() if isinstance(f, Fault) else f for f in patch["faults"]]
        result: dict[str, Any] = await self._req("PUT", "/_mock/config", patch)
        return result

    async def config(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._req("GET", "/_mock/config")
        return result

    async def sip(self) -> dict[str, Any]:
        """The SIP ingress and its workers (``GET /_mock/sip``; 404 when the mock runs without one)."""
        result: dict[str, Any] = await self._req("GET", "/_mock/sip")
        return result

    async def server_journal(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = (await self._req("GET", "/_mock/journal"))["entries"]
        return result

    async def wait_for(self, call_id: str, predicate: Callable[[CallView], bool], timeout: float = 10.0,
                       interval: float = 0.02) -> CallView:
        """Poll a call's timeline until ``predicate`` holds (journal reads, not private state)."""
        deadline = time.monotonic() + timeout
        while True:
            view = await self.call(call_id)
            if predicate(view):
                return view
            if time.monotonic() > deadline:
                raise TimeoutError(f"call {call_id} did not reach the expected state; last state {view.state}, "
                                   f"journal kinds {view.kinds()}")
            await asyncio.sleep(interval)
