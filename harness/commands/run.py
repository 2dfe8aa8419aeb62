"""``rtsip run``: live progress while scenarios run, a summary table, reports, exit status.

The run directory (each SIP call's recording of what the caller heard, softphone logs) lives
until the reports are written, so they can draw the caller's side from the audio; it is
removed then, unless ``keep``.

``repeat`` runs each scenario that many times and reports pass rates (:mod:`harness.report.rates`); the exit
status is 0 when every scenario's rate reaches ``min_pass_rate`` (1.0 by default: every run passes, as without
``repeat``). The run's seed (``seed``, else a random one) is printed whenever it can matter, so a chaos run can
be replayed with ``--seed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
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
from ..report.compare import comparisons, text_table
from ..report.model_notices import text_lines as model_lines
from ..report.rates import Rate, below, rates
from ..runner import ScenarioResult, collect, run_files
from ..scenario import ScenarioError, expand, load_scenario

SEED_RANGE = 2**31  # a random run seed is below this, so seed + i stays a plain whole number


def run_cli(paths: list[str], *, jobs: int, keyword: str | None, junit: Path | None, json_path: Path | None,
            html: Path | None, keep: bool = False, repeat: int | None = None, seed: int | None = None,
            min_pass_rate: float = 1.0) -> int:
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
    run_seed = seed if seed is not None else random.SystemRandom().randrange(SEED_RANGE)
    if repeat is not None or seed is not None or _has_chance(files):
        console.print(f"rtsip run: seed {run_seed} (faults draw with seed {run_seed} in run #1, {run_seed + 1} in "
                      f"#2, ...; replay with --seed {run_seed})", highlight=False)
    with _run_directory(keep, console) as run_dir:
        results = asyncio.run(_run(files, jobs, keyword, console, run_dir, repeat or 1, run_seed))
        if results is None:
            console.print("[yellow]interrupted; everything was torn down[/]")
            return 130
        if not results:
            errors.print(f"rtsip run: no scenario matched -k {escape(keyword or '')!r}")
            return 2
        found = rates(results)
        if repeat is None:
            _summary(results, console)
        else:
            _rate_summary(found, min_pass_rate, console)
        _write_reports(results, console, junit=junit, json_path=json_path, html=html,
                       kept=run_dir if keep else None)
    return 1 if below(found, min_pass_rate) else 0


def _has_chance(files: list[Path]) -> bool:
    """Whether a scenario has a fault with a ``probability`` (its draws then depend on the run's seed)."""
    for path in files:
        try:
            scenarios = expand(load_scenario(path))
        except ScenarioError:
            continue  # reported by the run as a failed scenario
        for s in scenarios:
            if any("probability" in (f.model_extra or {}) for f in [*s.mock.faults, *(f for c in s.calls
                                                                                     for f in c.faults)]):
                return True
    return False


def _rate_summary(found: list[Rate], min_pass_rate: float, console: Console) -> None:
    """One row per scenario: passes / runs, the failure kinds with their counts, the slowest run."""
    runs = sum(r.runs for r in found)
    table = Table(title=f"rtsip run: {sum(r.passes for r in found)}/{runs} runs passed", title_justify="left")
    table.add_column("scenario")
    table.add_column("passed", justify="right")
    table.add_column("rate", justify="right")
    table.add_column("failure kinds", overflow="fold")
    table.add_column("slowest", justify="right")
    for r in found:
        colour = "green" if r.rate >= min_pass_rate else "red"
        kinds = "; ".join(f"{n}× {k}" for k, n in r.kinds.items())
        seed = "" if r.slowest.fault_seed is None else f", seed {r.slowest.fault_seed}"
        table.add_row(escape(r.name), f"{r.passes}/{r.runs}", f"[{colour}]{r.rate:.0%}[/]", escape(kinds),
                      f"{r.slowest.seconds:.1f} s (#{r.slowest.repeat + 1}{seed})")
    console.print(table)
    low = below(found, min_pass_rate)
    if low:
        console.print(f"[red]below --min-pass-rate {min_pass_rate:g}:[/] {escape(', '.join(r.name for r in low))}")


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
    for comp in comparisons(results):  # compare: true scenarios: their variants side by side
        side = Table(title=f"{comp.name}: side by side (≠ differs)")
        side.add_column("")
        for col in comp.columns:
            side.add_column(escape(col), overflow="fold")
        side.add_column("")
        for cells in text_table(comp):
            side.add_row(*(escape(c) for c in cells))
        console.print(side)
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
               run_dir: Path, repeat: int = 1, seed: int | None = None) -> list[ScenarioResult] | None:
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
            progress.console.print(f"{mark} {escape(r.label)} ({r.seconds:.1f} s)")
            if repeat > 1 and r.verdict.startswith("error"):  # no table row says why a repeated run errored
                progress.console.print(f"  {escape(r.verdict[:400])}", soft_wrap=True)
            if r.label in tasks:
                progress.remove_task(tasks.pop(r.label))
            progress.update(overall, description=f"{done} scenario runs finished")

        try:
            return await run_files(files, jobs, on_result=on_result, on_step=on_step, keyword=keyword,
                                   run_dir=run_dir, repeat=repeat, seed=seed)
        except asyncio.CancelledError:
            if interrupted:
                return None
            raise
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
