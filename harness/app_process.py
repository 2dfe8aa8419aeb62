"""The app under test as a child process: started in its own process group, watched, torn down.

Whatever happens (a crash, a hang, Ctrl-C) ``stop`` kills the whole group, so no app
process outlives a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

TEST_API_KEY = "sk-rtsip-test-key"


PLACEHOLDERS = ("port", "python", "base_url", "ws_base", "mock_origin", "webhook_url", "ca", "proxy")
"""What a scenario's ``app.command``, ``app.env`` and ``app.cwd`` may name in braces."""


def fill_placeholders(text: str, values: Mapping[str, str]) -> str:
    """``text`` with each ``{name}`` of :data:`PLACEHOLDERS` replaced; other braces (JSON, shell) stay."""
    for name in PLACEHOLDERS:
        if name in values:
            text = text.replace("{" + name + "}", values[name])
    return text


def template_values(port: int, base_url: str = "", webhook_url: str = "", ca: str = "",
                    proxy: str = "") -> dict[str, str]:
    """The placeholder values of one run: the app's port, this interpreter, and where the mock is.

    ``base_url`` is the mock's ``http://host:port/v1``; ``ws_base`` the same as ``ws://``;
    ``mock_origin`` without the ``/v1``; ``proxy`` empty unless the app runs through interception.
    """
    origin = base_url.removesuffix("/v1")
    ws_base = "ws" + base_url.removeprefix("http") if base_url.startswith("http") else base_url
    return {"port": str(port), "python": sys.executable, "base_url": base_url, "ws_base": ws_base,
            "mock_origin": origin, "webhook_url": webhook_url, "ca": ca, "proxy": proxy}


def app_argv(command: list[str], port: int, values: Mapping[str, str] | None = None) -> list[str]:
    """The app's command with the placeholders filled in (``{port}`` and ``{python}`` at least)."""
    filled = template_values(port) | dict(values or {})
    return [fill_placeholders(a, filled) for a in command]


def app_env(base_url: str, webhook_secret: str, port: int | None = None,
            extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """What an app needs to reach the mock instead of OpenAI, the way an SDK app reads it."""
    env = {**(extra or {}), "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": TEST_API_KEY,
           "OPENAI_WEBHOOK_SECRET": webhook_secret}
    if port is not None:
        env["PORT"] = str(port)
    return env


class AppFailed(RuntimeError):
    """The app crashed or never became ready; the message says which, with its last output."""


@dataclass
class AppProcess:
    command: list[str]
    env: Mapping[str, str]
    cwd: Path | None = None
    lines: list[tuple[float, str]] = field(default_factory=list)
    started: float = 0.0
    _proc: asyncio.subprocess.Process | None = None
    _reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.started = time.monotonic()
        self._proc = await asyncio.create_subprocess_exec(
            *self.command, cwd=self.cwd, env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for raw in self._proc.stdout:
            self.lines.append((time.monotonic() - self.started, raw.decode(errors="replace").rstrip("\n")))

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.returncode

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def tail(self, n: int = 15) -> str:
        return "\n".join(line for _, line in self.lines[-n:]) or "(no output)"

    async def wait_ready(self, *, port: int, http_path: str | None, log_regex: str | None, timeout: float) -> float:
        """Seconds until ready; raises AppFailed if the app exits or the probe times out."""
        deadline = time.monotonic() + timeout
        pattern = re.compile(log_regex) if log_regex else None
        async with aiohttp.ClientSession() as http:
            while True:
                if self.returncode is not None:
                    await asyncio.sleep(0.05)  # let the reader collect the last lines
                    raise AppFailed(f"app exited with status {self.returncode} before it was ready; "
                                    f"last output:\n{self.tail()}")
                if pattern is not None and any(pattern.search(line) for _, line in self.lines):
                    return time.monotonic() - self.started
                if http_path is not None:
                    try:
                        async with http.get(f"http://127.0.0.1:{port}{http_path}",
                                            timeout=aiohttp.ClientTimeout(total=1)) as resp:
                            if resp.status < 500:
                                return time.monotonic() - self.started
                    except (aiohttp.ClientError, TimeoutError):
                        pass
                if time.monotonic() > deadline:
                    probe = f"GET {http_path}" if http_path else f"output matching {log_regex!r}"
                    raise AppFailed(f"app not ready after {timeout:.0f} s (waited for {probe}); "
                                    f"last output:\n{self.tail()}")
                await asyncio.sleep(0.05)

    async def stop(self, grace: float = 3.0) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            self._signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                self._signal(signal.SIGKILL)
                await proc.wait()
        # children the app left behind in its group go too
        self._signal(signal.SIGKILL)
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 2)
            except TimeoutError:
                self._reader.cancel()

    def _signal(self, sig: int) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)
