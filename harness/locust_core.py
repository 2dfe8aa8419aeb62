"""The rules of rtsip's Locust callers, without Locust, gevent or sockets (:mod:`harness.locust_users` is the adapter).

Rules:

1. One Locust user is one caller: it places one call at a time, back to back, so ``-u`` is the number of
   calls in flight and ``-r`` how fast that number ramps up.
2. A run of ``--rtsip-calls N`` places exactly N calls over every worker: each call takes a ticket from
   one :class:`CallBudget` (the master's, or the local runner's), and a user that gets none stops. With
   N = 0 there is no budget: the users call until ``--run-time`` or Ctrl-C.
3. The run ends once every ticket handed out has come back as a finished call, and the master's stats
   hold every one of them (:meth:`CallBudget.finished`).
4. Each call is one Locust request event ``call`` (named after the scenario; its time is the whole call;
   a failed call carries its reason, so Locust's failures table counts failures by reason), plus one
   ``journal`` event per latency sample of :data:`harness.load_metrics.METRICS` read from that call's journal
   (:func:`request_events`). Nothing is timed on the caller's side but the call itself.
5. Bad input is refused once, before any call, by the master or the local runner (:func:`refusal`): no
   scenario, a scenario that needs SIP for VirtualCaller, a virtual scenario for SipCaller, both classes
   in one run, more users or workers than calls (and, at the test's start, a mock without SIP or with
   fewer ingress slots than SipCaller users).
6. The caller's steps are the walk every virtual caller takes (:func:`harness.control_walk.virtual_call`),
   carried out by :func:`harness.control_walk.run_blocking`: a gevent greenlet cannot await.
7. The budget paces the calls, not Locust's spawn rate: each ticket carries the earliest time its call may
   start, at most ``rate`` starts a second over every worker and never in a burst to catch up, so
   ``rtsip load --rate`` means the same on one process or many. Past ``stop_at`` no ticket is handed out.
8. A SIP call's ticket also names its ingress worker and its caller's number: the master fills one
   ingress worker before the next over every Locust worker (:class:`harness.load_sip.IngressSlots`), and
   a call's slot is free again once its record is back.
9. A run that keeps records (``--rtsip-records FILE``, what ``rtsip load`` reads) has the master or the
   local runner write one JSON line per ticket handed out and per call back (:func:`record_line`); a
   worker sends its calls' records to the master with the ``done`` message.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .load_metrics import METRICS, CallRecord
from .scenario import Scenario

CALL_TYPE = "call"  # request_type of a whole call
JOURNAL_TYPE = "journal"  # request_type of a latency read from the call's journal


# ---- rule 2 and 3: the budget of calls -----------------------------------------------------------------


@dataclass(frozen=True)
class Ticket:
    """One call's place in the run: its index, and when it may start (rule 7)."""

    index: int
    start_at: float  # wall clock, unix seconds
    worker: int = -1  # a SIP call's ingress worker (harness.load_sip.IngressSlots), chosen by the master
    uri: str = ""  # that worker's contact URI
    number: str = ""  # the caller's number (From: tel:...), one per call from the scenario's seed


@dataclass
class CallBudget:
    """Tickets for ``total`` calls (0: no limit), handed out once each, and the calls that came back.

    ``rate`` (calls per second over every worker, 0: no pacing) spaces the tickets' start times without
    catching up in bursts; no ticket is handed out past ``stop_at`` (``rtsip load --duration``)."""

    total: int
    rate: float = 0.0
    stop_at: float = math.inf
    issued: int = 0
    done: int = 0
    next_start: float = 0.0

    def take(self, now: float = 0.0) -> Ticket | None:
        """The next call's ticket, or None when every call has been handed out or the time is up."""
        if self.closed(now):
            return None
        start = max(self.next_start, now)
        if start > self.stop_at:
            return None
        self.next_start = start + (1.0 / self.rate if self.rate > 0 else 0.0)
        self.issued += 1
        return Ticket(self.issued - 1, start)

    def closed(self, now: float) -> bool:
        """No more tickets: all handed out, or past ``stop_at``."""
        return bool(self.total and self.issued >= self.total) or now > self.stop_at

    def finish(self) -> None:
        """A call that had a ticket has ended (completed or failed)."""
        self.done += 1

    def finished(self, reported: int, now: float = 0.0) -> bool:
        """Every call is handed out, back, and in the stats (``reported``: the ``call`` events counted)."""
        return self.closed(now) and self.done >= self.issued and reported >= self.issued


# ---- rule 4: a call as Locust request events -----------------------------------------------------------


class CallFailed(Exception):
    """A call that failed, with the reason read from its journal (Locust groups failures by this text)."""


@dataclass(frozen=True)
class RequestEvent:
    """The arguments of one ``environment.events.request.fire``."""

    request_type: str
    name: str
    response_time: float  # ms
    exception: CallFailed | None = None


def request_events(record: CallRecord, call_name: str) -> list[RequestEvent]:
    """One call's record as Locust request events: each journal latency sample, then the call itself."""
    out = [RequestEvent(JOURNAL_TYPE, name, value)
           for name in METRICS for _, value in record.metrics.get(name, [])]
    failed = None if record.ok else CallFailed(record.reason or "unknown")
    out.append(RequestEvent(CALL_TYPE, call_name, round((record.end - record.start) * 1000, 3), failed))
    return out


# ---- rule 5: bad input ---------------------------------------------------------------------------------


@dataclass
class Setup:
    """What a run was given, as the master sees it when the test starts."""

    scenario: str | None
    calls: int
    users: int
    workers: int  # 0: not distributed
    user_classes: Sequence[str] = field(default_factory=list)
    mode: str = ""  # --rtsip-mode: the calls' mode when not the scenario's (rtsip load --mode)


def refusal(setup: Setup, load: Callable[[str], Scenario], sip_needs: Callable[[Scenario], list[str]]) -> str | None:
    """Why this run cannot work (one line), or None. ``load`` reads a scenario file, raising ValueError."""
    sip = "SipCaller" in setup.user_classes
    if sip and "VirtualCaller" in setup.user_classes:
        return "VirtualCaller and SipCaller in one run: a scenario's first call is one or the other; give one class"
    if not setup.scenario:
        return "no scenario: give --rtsip-scenario FILE (or RTSIP_SCENARIO=FILE)"
    if not Path(setup.scenario).is_file():
        return f"--rtsip-scenario {setup.scenario}: no such file"
    try:
        scenario = load(setup.scenario)
    except ValueError as exc:
        return f"--rtsip-scenario {setup.scenario}: {exc}".replace("\n", " ")
    needs = sip_needs(scenario)
    mode = setup.mode or scenario.calls[0].mode
    if sip and mode != "sip":
        return (f"{setup.scenario}: SipCaller places SIP calls, but calls[0] has mode: {mode}; use VirtualCaller "
                "(or --rtsip-mode sip)")
    if needs and not sip:
        return (f"{setup.scenario}: this scenario needs SIP features ({'; '.join(needs)}), which VirtualCaller "
                "does not have; run it with `rtsip load --mode sip`")
    if setup.calls < 0:
        return f"--rtsip-calls must be 0 (no limit) or more (got {setup.calls})"
    if setup.calls and setup.users > setup.calls:
        return (f"{setup.users} users for --rtsip-calls {setup.calls}: users beyond the calls would never call; "
                "lower -u or raise --rtsip-calls")
    if setup.calls and setup.workers > setup.calls:
        return f"{setup.workers} workers for --rtsip-calls {setup.calls}: some workers would never call"
    return None


# ---- rule 9: the records file ----------------------------------------------------------------------------


def record_line(kind: str, index: int, t: float, record: dict[str, object] | None = None) -> str:
    """One line of the records file: ``placed`` (a ticket handed out, ``t`` its start) or ``done``."""
    line: dict[str, object] = {"kind": kind, "index": index, "t": round(t, 4)}
    if record is not None:
        line["record"] = record
    return json.dumps(line, separators=(",", ":")) + "\n"
