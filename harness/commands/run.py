"""``rtsip run``: live progress while scenarios run, a summary table, reports, exit status.

The run directory (each SIP call's recording of what the caller heard, softphone logs) lives
until the reports are written, so they can draw the caller's side from the audio; it is
removed then, unless ``keep``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..expect import MOCK_BUG_NOTE
from ..report.model_notices import text_lines as model_lines
from ..runner import ScenarioResult, collect, run_files


def run_cli(paths: list[str], *, jobs: int, keyword: str | None, junit: Path | None, json_path: Path | None,
            html: Path | None, keep: bool = False) -> int:
    console = Console()
    errors = Console(stderr=True, soft_wrap=True, highlight=False)  # one line, like every CLI mistake
    files = collect(list(paths))
    missing = [f for f in files if not f.exists()]
    if missing:
        errors.print(f"rtsip run: no such scenario file: {escape(str(missing[0]))}")
        return 2
    if not files:
        errors.print("rtsip run: no scenario files matched")
        return 2
    with _run_directory(keep, console) as run_dir:
        results = asyncio.run(_run(files, jobs, keyword, console, run_dir))
        if results is None:
            console.print("[yellow]interrupted; everything was torn down[/]")
            return 130
        if not results:
            errors.print(f"rtsip run: no scenario matched -k {escape(keyword or '')!r}")
            return 2
        _summary(results, console)
        _write_reports(results, console, junit=junit, json_path=json_path, html=html,
                       kept=run_dir if keep else None)
    return 0 if all(r.passed for r in results) else 1


@contextlib.contextmanager
def _run_directory(keep: bool, console: Console) -> Iterator[Path]:
    """Where the run's SIP recordings go: alive until the reports are written, removed after unless ``keep``."""
    path = Path(tempfile.mkdtemp(prefix="rtsip-run-"))
    try:
        yield path
    finally:
        if keep:
            console.print(f"recordings and softphone logs kept in {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def _summary(results: list[ScenarioResult], console: Console) -> None:
    table = Table(title=f"rtsip run: {sum(r.passed for r in results)}/{len(results)} passed")
    table.add_column("scenario")
    table.add_column("result")
    table.add_column("s", justify="right")
    table.add_column("why", overflow="fold")
    for r in results:
        table.add_row(escape(r.name), "[green]PASS[/]" if r.passed else "[red]FAIL[/]", f"{r.seconds:.1f}",
                      "" if r.passed else escape(r.verdict[:400]))
    console.print(table)
    for r in results:
        for w in r.warnings:
            console.print(f"[yellow]warning[/] {escape(r.name)}: {escape(w)}")
    for line in model_lines(results):  # a model on a shutdown list: the app breaks on that date
        console.print(f"[black on yellow]model[/] [yellow]{escape(line)}[/]", soft_wrap=True)
    for r in results:
        for bug in (n for n in r.notes if n.startswith(MOCK_BUG_NOTE)):  # the traceback to file with the bug
            console.print(f"[red]{escape(r.name)}: {escape(bug)}[/]", soft_wrap=True)


def _write_reports(results: list[ScenarioResult], console: Console, *, junit: Path | None, json_path: Path | None,
                   html: Path | None, kept: Path | None) -> None:
    """Every report asked for; ``kept`` is the run directory when it outlives the command."""
    if junit:
        from ..report.junit import write_junit

        write_junit(results, junit)
        console.print(f"JUnit report: {junit}")
    if json_path:
        from ..report.json_report import write_json

        write_json(results, json_path, run_dir=kept)
        console.print(f"JSON report: {json_path}")
    if html:
        from ..report.html import write_html

        write_html(results, html)
        console.print(f"HTML report: {html}")


async def _run(files: list[Path], jobs: int, keyword: str | None, console: Console,
               run_dir: Path) -> list[ScenarioResult] | None:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    interrupted = False

    def stop() -> None:
        nonlocal interrupted
        interrupted = True
        main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True) as progress:
        tasks: dict[str, TaskID] = {}
        overall = progress.add_task(f"0/{len(files)} files", total=None)
        done = 0

        def on_step(name: str, msg: str) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(escape(f"{name}: {msg}"), total=None)
            progress.update(tasks[name], description=escape(f"{name}: {msg}"))

        def on_result(r: ScenarioResult) -> None:
            nonlocal done
            done += 1
            mark = "[green]PASS[/]" if r.passed else "[red]FAIL[/]"
            progress.console.print(f"{mark} {escape(r.name)} ({r.seconds:.1f} s)")
            if r.name in tasks:
                progress.remove_task(tasks.pop(r.name))
            progress.update(overall, description=f"{done} scenario runs finished")

        try:
            return await run_files(files, jobs, on_result=on_result, on_step=on_step, keyword=keyword,
                                   run_dir=run_dir)
        except asyncio.CancelledError:
            if interrupted:
                return None
            raise
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
