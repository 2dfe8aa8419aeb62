"""Run ``rtsip mock`` as a child process and read its ready line.

The runner, the benchmarks and the CLI tests use this, so the mock they talk to is the
same program a user starts by hand.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass, field
from types import TracebackType

from mock_api.subprocesses import stop_group

READY = "rtsip mock ready:"


@dataclass
class MockProcess:
    args: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None
    startup_timeout: float = 20.0
    # what runs, and the line that says it is ready
    command: tuple[str, ...] = ("-m", "harness.cli", "mock")
    ready_prefix: str = READY
    ready: dict[str, str] = field(default_factory=dict)
    output: list[str] = field(default_factory=list)
    _proc: asyncio.subprocess.Process | None = None
    _reader: asyncio.Task[None] | None = None
    _new_line: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def base_url(self) -> str:
        return self.ready["base_url"]

    @property
    def url(self) -> str:
        return self.base_url.removesuffix("/v1")

    @property
    def webhook_secret(self) -> str:
        return self.ready["webhook_secret"]

    @property
    def returncode(self) -> int | None:
        """The exit status once the mock has stopped; None while it runs."""
        return None if self._proc is None else self._proc.returncode

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    async def __aenter__(self) -> MockProcess:
        env = {**os.environ, **(self.env or {}), "PYTHONUNBUFFERED": "1"}
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, *self.command, *self.args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
            start_new_session=True,
        )
        assert self._proc.stdout is not None
        try:
            async with asyncio.timeout(self.startup_timeout):
                while True:
                    raw = await self._proc.stdout.readline()
                    if not raw:
                        raise RuntimeError(f"{' '.join(self.command)} exited before it was ready:\n"
                                           + "".join(self.output))
                    line = raw.decode(errors="replace")
                    self.output.append(line)
                    if line.startswith(self.ready_prefix):
                        self.ready = dict(tok.split("=", 1) for tok in line[len(self.ready_prefix):].split()
                                          if "=" in tok)
                        break
        except BaseException:
            await self.stop()
            raise
        self._reader = asyncio.create_task(self._drain())
        return self

    async def _drain(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            async for raw in self._proc.stdout:
                self.output.append(raw.decode(errors="replace"))
                self._new_line.set()
        finally:
            self._new_line.set()  # end of output: a waiting wait_for_line looks once more, then gives up

    async def wait_for_line(self, prefix: str, timeout: float = 10.0) -> str:
        """The first output line (stdout or stderr) starting with ``prefix``, waiting for it to come.

        Raises TimeoutError after ``timeout`` s, EOFError when the process closed its output without it."""
        async with asyncio.timeout(timeout):
            while True:
                self._new_line.clear()
                hit = next((line for line in self.output if line.startswith(prefix)), None)
                if hit is not None:
                    return hit
                if self._reader is None or self._reader.done():
                    raise EOFError(f"the mock's output ended without a line starting with {prefix!r}")
                await self._new_line.wait()

    def send_signal(self, sig: int) -> None:
        """Signal the mock (SIGTERM or SIGINT: a clean stop; a second one: stop at once)."""
        assert self._proc is not None
        self._proc.send_signal(sig)

    async def wait(self, timeout: float | None = None) -> int:
        """Wait for the mock to exit; its status (negative: killed by that signal)."""
        assert self._proc is not None
        return await asyncio.wait_for(self._proc.wait(), timeout)

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def stop(self, timeout: float = 5.0) -> int | None:
        return await stop_group(self._proc, self._reader, timeout)
