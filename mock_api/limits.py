"""OpenAI-side limits, sans-I/O: token buckets and a concurrency counter fed a clock.

The real service meters requests (RPM) and tokens (TPM) per organization with buckets that
refill continuously (a 60 RPM limit may be enforced as 1 request per second), reports what
is left in ``x-ratelimit-*`` headers and ``rate_limits.updated``, and refuses work over the
budget with HTTP 429 / a failed response. It also caps concurrent Realtime sessions.

Nothing here does I/O or reads a clock: every call takes ``now`` (monotonic seconds). The
HTTP and WebSocket adapters ask, the session core reserves and settles response tokens,
and whoever is refused journals a ``limits.hit``.

All limits are off (``None``) by default; :class:`Limiter` then answers "allowed" to
everything and keeps no state that could change the mock's behaviour.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Literal

LimitName = Literal["requests", "tokens", "sessions"]
RATE_LIMITS_URL = "https://platform.openai.com/account/rate-limits"
ORGANIZATION = "org-rtsipmock"


class TokenBucket:
    """``limit`` units that refill at ``limit / window_s`` per second, capped at ``limit``.

    Locked: a session core may run a heavy frame on a worker thread (``ws.py``) while the loop spends
    from the same server-wide bucket, and each change is a read-modify-write."""

    def __init__(self, limit: int, window_s: float = 60.0, now: float = 0.0) -> None:
        if limit <= 0 or window_s <= 0:
            raise ValueError("limit and window_s must be positive")
        self.limit = limit
        self.window_s = window_s
        self.rate = limit / window_s
        self._level = float(limit)
        self._at = now
        self._lock = threading.RLock()

    def _refill(self, now: float) -> float:
        with self._lock:
            if now > self._at:
                self._level = min(float(self.limit), self._level + (now - self._at) * self.rate)
                self._at = now
            return self._level

    def remaining(self, now: float) -> int:
        return int(self._refill(now) + 1e-9)

    def used(self, now: float) -> int:
        return self.limit - self.remaining(now)

    def try_take(self, n: float, now: float) -> bool:
        """Take ``n`` if they are all there; otherwise take nothing."""
        with self._lock:
            if self._refill(now) + 1e-9 < n:
                return False
            self._level = max(0.0, self._level - n)
            return True

    def take(self, n: float, now: float) -> None:
        """Take ``n`` whatever is left (spending that already happened), never below zero."""
        with self._lock:
            self._level = max(0.0, self._refill(now) - n)

    def give(self, n: float, now: float) -> None:
        """Return ``n`` (an over-reservation), never above the limit."""
        with self._lock:
            self._level = min(float(self.limit), self._refill(now) + n)

    def wait_s(self, n: float, now: float) -> float:
        """Seconds until ``n`` units are available (``inf`` when ``n`` exceeds the limit)."""
        if n > self.limit:
            return math.inf
        return max(0.0, (n - self._refill(now)) / self.rate)

    def reset_s(self, now: float) -> float:
        """Seconds until the bucket is full again (``x-ratelimit-reset-*``, ``reset_seconds``)."""
        return max(0.0, (self.limit - self._refill(now)) / self.rate)


class Concurrency:
    """Holders of a concurrent slot (call ids, socket keys), counted against a cap read at each check."""

    def __init__(self) -> None:
        self.holders: set[str] = set()

    @property
    def active(self) -> int:
        return len(self.holders)

    def full(self, cap: int | None) -> bool:
        return cap is not None and len(self.holders) >= cap

    def acquire(self, key: str) -> None:
        self.holders.add(key)

    def release(self, key: str) -> bool:
        if key in self.holders:
            self.holders.discard(key)
            return True
        return False


@dataclass(frozen=True)
class Hit:
    """One refusal: which limit, its value, how much was used and asked for, when to retry."""

    limit: LimitName
    value: int
    used: int
    requested: int
    retry_after_s: float | None  # None: unknown (a session slot frees when some session ends)

    def message(self, resource: str = "gpt-realtime") -> str:
        """The real service's wording (``Rate limit reached for … on requests per min (RPM): …``)."""
        where = f"Rate limit reached for {resource} in organization {ORGANIZATION}"
        if self.limit == "sessions":
            return (f"{where} on concurrent sessions: Limit {self.value}, Used {self.used}, Requested "
                    f"{self.requested}. Please try again once an active session has ended. Visit "
                    f"{RATE_LIMITS_URL} to learn more.")
        unit = "requests per min (RPM)" if self.limit == "requests" else "tokens per min (TPM)"
        if self.retry_after_s is None or math.isinf(self.retry_after_s):
            return (f"Request too large for {resource} in organization {ORGANIZATION} on {unit}: Limit "
                    f"{self.value}, Requested {self.requested}. The input or output tokens must be reduced in "
                    f"order to run successfully. Visit {RATE_LIMITS_URL} to learn more.")
        return (f"{where} on {unit}: Limit {self.value}, Used {self.used}, Requested {self.requested}. Please try "
                f"again in {duration(self.retry_after_s)}. Visit {RATE_LIMITS_URL} to learn more.")

    @property
    def error_type(self) -> str:
        """``error.type`` as the real 429s carry it: ``requests`` or ``tokens`` (sessions count as requests)."""
        return "tokens" if self.limit == "tokens" else "requests"


def duration(seconds: float) -> str:
    """Go-style durations as the real headers and messages print them: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    minutes, rest = divmod(seconds, 60)
    secs = f"{rest:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{secs}s"


class Limiter:
    """The organization's limits: a request bucket, a token bucket and the session counter.

    ``configure`` is called with the current caps whenever the config changes; a bucket
    whose cap changes starts full, one whose cap stays keeps its level.
    """

    def __init__(self) -> None:
        self.max_sessions: int | None = None
        self.requests: TokenBucket | None = None
        self.tokens: TokenBucket | None = None
        self.sessions = Concurrency()
        self.hits: Counter[str] = Counter()

    def configure(self, *, max_concurrent_sessions: int | None, requests_per_minute: int | None,
                  tokens_per_minute: int | None, window_s: float, now: float) -> None:
        self.max_sessions = max_concurrent_sessions
        self.requests = _rebuild(self.requests, requests_per_minute, window_s, now)
        self.tokens = _rebuild(self.tokens, tokens_per_minute, window_s, now)

    def refill(self, now: float) -> None:
        """Back to full buckets (``POST /_mock/reset``); session holders stay with their sessions."""
        for b in (self.requests, self.tokens):
            if b is not None:
                b.give(b.limit, now)
        self.hits.clear()

    @property
    def enabled(self) -> bool:
        return self.max_sessions is not None or self.requests is not None or self.tokens is not None

    # ---- requests ----------------------------------------------------------------------------

    def request(self, now: float) -> Hit | None:
        """Count one REST request; a Hit when the RPM budget is spent (the request is not counted)."""
        b = self.requests
        if b is None or b.try_take(1, now):
            return None
        return self._hit(Hit("requests", b.limit, b.used(now), 1, b.wait_s(1, now)))

    def request_headers(self, now: float) -> dict[str, str]:
        """``x-ratelimit-{limit,remaining,reset}-requests`` for a REST answer; empty without an RPM limit."""
        b = self.requests
        if b is None:
            return {}
        return {"x-ratelimit-limit-requests": str(b.limit), "x-ratelimit-remaining-requests": str(b.remaining(now)),
                "x-ratelimit-reset-requests": duration(b.reset_s(now))}

    # ---- sessions -------------------------------------------------------------------------------

    def session(self, key: str) -> Hit | None:
        """Take a concurrent-session slot for ``key``; a Hit when all are held."""
        if key in self.sessions.holders:
            return None
        if self.sessions.full(self.max_sessions):
            assert self.max_sessions is not None
            return self._hit(Hit("sessions", self.max_sessions, self.sessions.active, 1, None))
        self.sessions.acquire(key)
        return None

    def session_full(self) -> Hit | None:
        """Would one more session be refused? (Checked before an accept; the slot is taken on start.)"""
        if self.sessions.full(self.max_sessions):
            assert self.max_sessions is not None
            return self._hit(Hit("sessions", self.max_sessions, self.sessions.active, 1, None))
        return None

    def end_session(self, key: str) -> None:
        self.sessions.release(key)

    # ---- tokens -----------------------------------------------------------------------------------

    def reserve_tokens(self, n: int, now: float) -> Hit | None:
        """Reserve ``n`` tokens for a response about to start; a Hit when the TPM budget lacks them."""
        b = self.tokens
        if b is None or b.try_take(n, now):
            return None
        return self._hit(Hit("tokens", b.limit, b.used(now), n, b.wait_s(n, now)))

    def _hit(self, hit: Hit) -> Hit:
        self.hits[hit.limit] += 1
        return hit


def _rebuild(bucket: TokenBucket | None, limit: int | None, window_s: float, now: float) -> TokenBucket | None:
    if limit is None:
        return None
    if bucket is not None and bucket.limit == limit and bucket.window_s == window_s:
        return bucket
    return TokenBucket(limit, window_s, now)


@dataclass
class Reservation:
    """Tokens held for one response, in the bucket they were taken from (0 when nothing is enforced)."""

    bucket: TokenBucket
    tokens: int


class SessionTokens:
    """A Realtime session's token budget: reserve at response start, settle at ``response.done``.

    Without a TPM limit (the default) it is a private 40 000 TPM bucket that only reports
    (``rate_limits.updated``) and never refuses, as before limits existed. With one, every
    session draws from the organization's shared bucket in :class:`Limiter`, and a response
    that does not fit is refused. The limiter is consulted at each response, so a limit set
    or lifted by ``PUT /_mock/config`` applies to live sessions too.
    """

    def __init__(self, limiter: Limiter | None, now: float, default_limit: int = 40000,
                 default_window_s: float = 60.0) -> None:
        self.limiter = limiter
        self._private = TokenBucket(default_limit, default_window_s, now)

    @property
    def bucket(self) -> TokenBucket:
        shared = self.limiter.tokens if self.limiter is not None else None
        return shared if shared is not None else self._private

    @property
    def enforced(self) -> bool:
        return self.limiter is not None and self.limiter.tokens is not None

    def reserve(self, n: int, now: float) -> Hit | Reservation:
        """Hold ``n`` tokens for a response about to run, or the Hit that refuses it."""
        if not self.enforced:
            return Reservation(self._private, 0)
        assert self.limiter is not None and self.limiter.tokens is not None
        hit = self.limiter.reserve_tokens(n, now)
        return hit if hit is not None else Reservation(self.limiter.tokens, n)

    def settle(self, held: Reservation, spent: int, now: float) -> None:
        """The response is done and cost ``spent``: return the over-reservation or take the rest."""
        if held.bucket is not self.bucket:  # reconfigured meanwhile: charge whatever bucket reports now
            self.bucket.take(spent, now)
        elif held.tokens >= spent:
            held.bucket.give(held.tokens - spent, now)
        else:
            held.bucket.take(spent - held.tokens, now)

    def rate_limit(self, now: float) -> dict[str, object]:
        """One entry of ``rate_limits.updated.rate_limits``."""
        b = self.bucket
        return {"name": "tokens", "limit": b.limit, "remaining": b.remaining(now),
                "reset_seconds": round(b.reset_s(now), 3)}
