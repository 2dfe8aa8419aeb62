"""The fuzz campaign at CI size (issue 15): 2,000 generated and mutated cases against a real ``rtsip mock``.

The engine is bench/bench_fuzz.py's, run in this process; the mock is its own process on OS-chosen
ports. The seed is fixed and the corpus of cases that found bugs (bench/fuzz_strategies.py CORPUS) runs
first, so a failure here replays. Loop stall and RSS depend on the machine: they are printed, and only a
stall of a second or more (a hang in all but name) fails.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from rich.console import Console

from bench.bench_fuzz import Figures, envelope_problem, judge_event, judge_http, kinds_table, run_campaign, table

CASES = 2000
SEED = 1


@pytest.fixture(scope="module")
def figures() -> Figures:
    result = asyncio.run(run_campaign(CASES, SEED))
    console = Console(width=160)
    console.print(table(result))
    if result.kinds:
        console.print(kinds_table(result))
    return result


def failures(f: Figures, cls: str) -> str:
    """The first case of each failure kind of one class, for the assertion message."""
    lines = [f"{n} × {kind}\n    {f.examples[kind]}" for kind, n in f.kinds.items() if kind.startswith(cls + " ")]
    return "\n".join(lines)


def test_every_surface_got_its_share(figures: Figures) -> None:
    assert figures.cases == CASES and not figures.mock_died
    assert set(figures.by_surface) == {"ws.model", "ws.call", "rest", "control"}
    sockets = figures.by_surface["ws.model"] + figures.by_surface["ws.call"]
    assert min(sockets, figures.by_surface["rest"], figures.by_surface["control"]) >= CASES // 4


def test_no_crashes(figures: Figures) -> None:
    assert figures.crashes == 0, failures(figures, "crash")


def test_no_hangs(figures: Figures) -> None:
    assert figures.hangs == 0, failures(figures, "hang")


def test_no_unshaped_answers(figures: Figures) -> None:
    assert figures.unshaped == 0, failures(figures, "unshaped")


def test_no_invalid_json_emitted(figures: Figures) -> None:
    assert figures.invalid_json == 0, failures(figures, "invalid_json")


def test_loop_never_stalls_for_a_second(figures: Figures) -> None:
    print(f"worst stall {figures.stall_worst_ms} ms, p99 {figures.stall_p99_ms} ms; RSS {figures.rss_warm_mb} MB "
          f"after warm-up, {figures.rss_end_mb} MB at the end ({figures.rss_growth_pct:+.1f} %)")
    assert figures.probes > 0
    assert figures.stall_worst_ms < 1000


def test_the_judges_know_the_api_shapes() -> None:
    """What the campaign counts, on answers made up here (no mock): the classes above rest on these."""
    shaped = b'{"error": {"message": "m", "type": "invalid_request_error", "param": null, "code": null}}'
    azure = b'{"error": {"code": "401", "message": "Access denied"}}'
    assert judge_http("/v1/chat/completions", 400, "application/json", shaped) == []
    assert judge_http("/openai/v1/responses", 401, "application/json", azure) == []
    assert [c for c, _ in judge_http("/v1/responses", 401, "application/json", azure)] == ["unshaped"]
    assert [c for c, _ in judge_http("/v1/x", 500, "application/json", shaped)] == ["crash"]
    assert [c for c, _ in judge_http("/v1/x", 413, "text/plain", b"Maximum request body size")] == ["unshaped"]
    assert [c for c, _ in judge_http("/v1/x", 200, "application/json", b'{"a": NaN}')] == ["invalid_json"]
    chat = {"id": "c", "object": "chat.completion", "created": 1, "model": 5, "choices": []}
    assert [c for c, _ in judge_http("/v1/chat/completions", 200, "application/json",
                                     json.dumps(chat).encode())] == ["unshaped"]
    assert judge_http("/v1/chat/completions", 200, "application/json",
                      json.dumps({**chat, "model": "gpt-4o-mini"}).encode()) == []
    crash = {"type": "error", "event_id": "e", "error": {"type": "server_error", "code": None, "message": "x",
                                                         "param": None, "event_id": None}}
    assert [c for c, _ in judge_event(json.dumps(crash))[1]] == ["crash"]
    assert [c for c, _ in judge_event('{"type": "no.such.event"}')[1]] == ["unshaped"]
    assert envelope_problem({"error": {"message": "m", "type": "t", "param": None}}) == "error.code missing"
