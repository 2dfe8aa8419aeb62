"""A small typed client for the mock's ``/_mock/`` control API."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
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


TOKEN_ENV = "RTSIP_CONTROL_TOKEN"
PAGE = 5000  # journal entries per request when reading a whole timeline


class MockClient:
    """``async with MockClient("http://127.0.0.1:8765") as mock: call_id = await mock.start_call()``.

    ``token``: the mock's control token (``rtsip mock --control-token``; default ``$RTSIP_CONTROL_TOKEN``),
    sent as ``X-Rtsip-Token`` with every request. Long timelines are read a page at a time.
    """

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url.rstrip("/").removesuffix("/v1")
        self.token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
        self._http: aiohttp.ClientSession | None = None

    @classmethod
    def from_state_dir(cls, directory: str | os.PathLike[str] | None = None) -> MockClient:
        """A client for the ``rtsip mock`` that uses ``directory`` (its ``running.json``: URL and token)."""
        from .state import read_running, state_path

        info = read_running(state_path(directory) if directory is None else Path(directory))
        if info is None:
            raise MockControlError(0, f"no rtsip mock is running with the state directory {state_path(directory)}")
        return cls(str(info["control"]), token=info.get("control_token"))

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
        headers = {"X-Rtsip-Token": self.token} if self.token else None
        async with self._http.request(method, self.url + path, json=json, headers=headers) as resp:
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
        """Every call the mock keeps (read a page of calls at a time)."""
        out: list[CallView] = []
        after: str | None = None
        while True:
            path = "/_mock/calls?" + ("" if entries else "entries=0&") + (f"after={after}" if after else "")
            body = await self._req("GET", path.rstrip("?&"))
            out += CallList.model_validate(body).calls
            after = body.get("next_after")
            if not after:
                return out

    async def call(self, call_id: str) -> CallView:
        """A call with its whole timeline (read ``PAGE`` entries at a time)."""
        body = await self._timeline(f"/_mock/calls/{call_id}")
        return CallView.model_validate(body)

    async def _timeline(self, path: str) -> dict[str, Any]:
        """A paged timeline read whole: the first page's fields with every page's entries."""
        first: dict[str, Any] = await self._req("GET", f"{path}?after=0&limit={PAGE}")
        entries: list[dict[str, Any]] = first.get("entries", [])
        after = first.pop("next_after", None)
        while after is not None:
            page = await self._req("GET", f"{path}?after={after}&limit={PAGE}")
            entries += page.get("entries", [])
            after = page.get("next_after")
        first["entries"] = entries
        return first

    async def sessions(self) -> list[dict[str, Any]]:
        """Call-less sessions (``?model=`` / ``?intent=`` sockets) the journal keeps: id, start, entries."""
        result: list[dict[str, Any]] = (await self._req("GET", "/_mock/sessions"))["sessions"]
        return result

    async def session_journal(self, session_id: str) -> list[dict[str, Any]]:
        """One call-less session's whole timeline."""
        result: list[dict[str, Any]] = (await self._timeline(f"/_mock/sessions/{session_id}"))["entries"]
        return result

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
        if patch.get("faults") is not None:
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
        """The whole server timeline (entries that belong to no call), read a page at a time."""
        result: list[dict[str, Any]] = (await self._timeline("/_mock/journal"))["entries"]
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
