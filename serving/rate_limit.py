"""Exact sliding-window rate limits: at most N requests per client in *any* window.

A fixed window lets 2N through around a boundary and a token bucket refills mid-window, so
each client keeps the times of its accepted requests (a Redis sorted set, shared by all
workers, or a deque in-process) and a request is accepted only while fewer than N of them
are younger than the window. Refused requests are not recorded, so a client that keeps
hammering gets through again as soon as its oldest request leaves the window.

``check_and_get`` is the per-request entry point: with Redis it decides the rate limit and
reads the cache in one Lua script, i.e. one round trip. The same script can also refuse a
request whose address failed authentication too often (a :class:`Guard`, see
``serving/auth_limit.py``).
"""

from __future__ import annotations

import itertools
import math
import os
import re
import time
from collections import deque
from collections.abc import Callable
from typing import Literal, NamedTuple, Protocol

from serving import metrics
from serving.cache import Cache, CacheLookup, RedisCache
from serving.metrics import CacheResult
from serving.redis_link import CoalescedScript, LuaScript, RedisLink

KEY_PREFIX = "churn:rl:"
_UNITS = {"second": 1, "minute": 60, "hour": 3600}
_RATE = re.compile(r"\s*(\d+)\s*/\s*(second|minute|hour)s?\s*", re.IGNORECASE)


class Rate(NamedTuple):
    """``limit`` requests per ``window_seconds``."""

    limit: int
    window_seconds: int


Refusal = Literal["rate_limit", "auth_failures"]
"""Why a request was refused with 429: its client's rate limit, or its address's failed
authentications (:class:`Guard`)."""


class Decision(NamedTuple):
    """Whether to serve; if not, the whole seconds (≥ 1) to put in ``Retry-After``."""

    allowed: bool
    retry_after: int
    refused_by: Refusal = "rate_limit"


ALLOWED = Decision(True, 0)


class Guard(NamedTuple):
    """Refuse while the sorted set ``key`` holds ``rate.limit`` entries younger than the
    window (checked in the admission script, without recording anything)."""

    key: str
    rate: Rate


class Admission(NamedTuple):
    """Outcome of :func:`check_and_get`: the rate-limit decision and the cache look-up."""

    allowed: bool
    retry_after: int  # whole seconds ≥ 1 when refused, else 0
    cached: bytes | None  # the cached response on a hit
    cache_result: CacheResult | None  # None: refused, or no key (not cacheable)
    refused_by: Refusal | None = None


class RateLimiter(Protocol):
    """What the middleware needs; both limiters implement it."""

    rate: Rate

    async def check(self, client_id: str) -> Decision: ...

    def peek(self, client_id: str) -> Decision:
        """Whether this process's window would refuse the client now (records nothing)."""
        ...


def parse_rate(text: str) -> Rate:
    """``"1000/minute"`` → ``Rate(1000, 60)``; also ``N/second`` and ``N/hour``."""
    match = _RATE.fullmatch(text)
    if match is None or int(match[1]) <= 0:
        raise ValueError(
            f"rate limit {text!r} is not N/second, N/minute or N/hour with N ≥ 1 "
            "(for example 1000/minute)"
        )
    return Rate(int(match[1]), _UNITS[match[2].lower()])


def rate_limit_key(client_id: str) -> str:
    """The Redis sorted set of a client's accepted requests."""
    return f"{KEY_PREFIX}{client_id}"


def _retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))


class LocalRateLimiter:
    """Per-process limits: used without Redis, and inside every RedisRateLimiter."""

    def __init__(self, rate: Rate, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._accepted: dict[str, deque[float]] = {}
        self._next_sweep = clock() + rate.window_seconds

    def decide(self, client_id: str) -> Decision:
        """Accept (and record) the request if fewer than N were accepted in the window."""
        return self.reserve(client_id)[0]

    def reserve(self, client_id: str) -> tuple[Decision, float]:
        """:meth:`decide`, also returning the time recorded (for :meth:`release`)."""
        now = self._clock()
        self._sweep_idle(now)
        times = self._window(client_id, now)
        if len(times) >= self.rate.limit:
            return Decision(False, _retry_after(times[0] + self.rate.window_seconds - now)), now
        times.append(now)
        return ALLOWED, now

    def release(self, client_id: str, when: float) -> None:
        """Forget a request recorded by :meth:`reserve` that was refused after all."""
        times = self._accepted.get(client_id)
        if not times:
            return
        if times[-1] == when:
            times.pop()
        elif when in times:  # another request of the client was recorded meanwhile
            times.remove(when)

    def peek(self, client_id: str) -> Decision:
        """Would :meth:`decide` refuse now? Records nothing."""
        if client_id not in self._accepted:
            return ALLOWED
        now = self._clock()
        times = self._window(client_id, now)
        if len(times) >= self.rate.limit:
            return Decision(False, _retry_after(times[0] + self.rate.window_seconds - now))
        return ALLOWED

    def _window(self, client_id: str, now: float) -> deque[float]:
        """The client's accepted times still in the window (older ones dropped)."""
        times = self._accepted.setdefault(client_id, deque())
        oldest_allowed = now - self.rate.window_seconds
        while times and times[0] <= oldest_allowed:
            times.popleft()
        return times

    async def check(self, client_id: str) -> Decision:
        """:meth:`decide`, with the limiters' common async signature."""
        return self.decide(client_id)

    def _sweep_idle(self, now: float) -> None:
        """Once per window, forget clients with nothing in the window (bounds memory)."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.rate.window_seconds
        oldest_allowed = now - self.rate.window_seconds
        for client_id in [c for c, t in self._accepted.items() if not t or t[-1] <= oldest_allowed]:
            del self._accepted[client_id]


# Redis's clock, so every worker (and host) agrees on "now". Times are integer microseconds
# formatted with %.0f: Lua prints numbers with 14 significant digits and these have 16.
# KEYS: the client's set, a guard's set (unused when ARGV[5] is 0), optionally a cache key.
# ARGV: limit, window (µs), expiry (ms), member, guard limit (0: none), guard window (µs).
# Reply: {1, 0[, cached]} accepted; {0, µs to wait} over the limit; {2, µs} guarded.
_SLIDING_WINDOW = LuaScript(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local guard_limit = tonumber(ARGV[5])
if guard_limit > 0 then
  local guard_window = tonumber(ARGV[6])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', now - guard_window))
  if redis.call('ZCARD', KEYS[2]) >= guard_limit then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    return {2, tonumber(oldest[2]) + guard_window - now}
  end
end
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - window))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tonumber(oldest[2]) + window - now}
end
redis.call('ZADD', KEYS[1], string.format('%.0f', now), ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if KEYS[3] then
  return {1, 0, redis.call('GET', KEYS[3])}
end
return {1, 0}
"""
)
_REFUSALS: dict[int, Refusal] = {0: "rate_limit", 2: "auth_failures"}
# The same window, only read: is the set full? ({0, µs to wait} or {1, 0}; records nothing.)
_FULL = LuaScript(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - window))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tonumber(oldest[2]) + window - now}
end
return {1, 0}
"""
)


class RedisRateLimiter:
    """Limits shared by all workers through Redis, and never looser than each worker's own.

    Every worker also keeps its accepted times in ``self.local`` (a deque append), and a
    request is accepted only if both that local window and Redis allow it. The guarantee,
    per client and any window: while Redis is up and keeps its data, at most N across all
    workers and replicas; while Redis is down, or after it restarted empty, at most N per
    worker, i.e. N × workers per replica (each worker still counts what it accepted before
    the outage). Redis down means the local window alone decides: a looser limit for a
    while rather than refusing everyone.
    """

    def __init__(self, link: RedisLink, rate: Rate) -> None:
        self.link = link
        self.rate = rate
        self.local = LocalRateLimiter(rate)
        self._script = CoalescedScript(link, _SLIDING_WINDOW)
        self._full = CoalescedScript(link, _FULL)
        self._member_prefix = f"{os.urandom(6).hex()}:"  # unique across workers
        self._sequence = itertools.count()

    async def check(self, client_id: str) -> Decision:
        """Decide in Redis (one round trip) and in-process; in-process only if Redis is down."""
        decision, _ = await self.check_with_get(client_id, None)
        return decision

    def peek(self, client_id: str) -> Decision:
        """Whether this worker's own window refuses the client now (records nothing)."""
        return self.local.peek(client_id)

    async def peek_shared(self, client_id: str) -> Decision:
        """:meth:`peek`, then whether Redis's window is full (records nothing)."""
        local = self.local.peek(client_id)
        if not local.allowed:
            return local
        window_us = self.rate.window_seconds * 1_000_000
        reply = await self._full([rate_limit_key(client_id)], [self.rate.limit, window_us])
        if reply is None or reply[0]:
            return ALLOWED
        return Decision(False, _retry_after(int(reply[1]) / 1_000_000))

    async def check_with_get(
        self, client_id: str, cache_key: str | None, guard: Guard | None = None
    ) -> tuple[Decision, CacheLookup | None]:
        """Decide and, if allowed and ``cache_key`` is given, GET it in the same script.

        The look-up is None when refused or without a key; its result is "error" when
        Redis was down (the decision then comes from the local window alone). ``guard``
        refuses the request first, in the same script, while its set is full.
        """
        local, reserved = self.local.reserve(client_id)
        if not local.allowed:
            return local, None
        guard_key, guard_limit, guard_us = (
            (guard.key, guard.rate.limit, guard.rate.window_seconds * 1_000_000)
            if guard
            else (rate_limit_key(client_id), 0, 0)
        )
        keys = [rate_limit_key(client_id), guard_key] + ([cache_key] if cache_key else [])
        window_us = self.rate.window_seconds * 1_000_000
        args = [self.rate.limit, window_us, self.rate.window_seconds * 1000, self._member()]
        reply = await self._script(keys, [*args, guard_limit, guard_us])
        if reply is None:  # Redis down: the local window (already recorded) decides
            return ALLOWED, CacheLookup(None, "error") if cache_key else None
        if reply[0] != 1:
            self.local.release(client_id, reserved)
            retry_after = _retry_after(int(reply[1]) / 1_000_000)
            return Decision(False, retry_after, _REFUSALS[int(reply[0])]), None
        if not cache_key:
            return ALLOWED, None
        value = reply[2]
        lookup = CacheLookup(value, "hit") if value is not None else CacheLookup(None, "miss")
        return ALLOWED, lookup

    def _member(self) -> str:
        return f"{self._member_prefix}{next(self._sequence)}"


async def check_and_get(
    limiter: RateLimiter,
    cache: Cache | None,
    client_id: str,
    key: str | None,
    guard: Guard | None = None,
) -> Admission:
    """Rate-limit ``client_id`` and, if allowed, look ``key`` up; records the metrics.

    One Redis round trip when both use the same link, else two cheap calls (in-process ones
    cost nothing). ``key=None`` means "not cacheable"; ``cache=None`` means the cache is off.
    ``guard`` is checked in the same Redis script (in-process guards are the caller's).
    """
    lookup: CacheLookup | None = None
    if isinstance(limiter, RedisRateLimiter):
        if key is not None and isinstance(cache, RedisCache) and cache.link is limiter.link:
            decision, lookup = await limiter.check_with_get(client_id, key, guard)
            if lookup is not None:
                cache.count(lookup)
        else:
            decision, _ = await limiter.check_with_get(client_id, None, guard)
    else:
        decision = await limiter.check(client_id)
    if lookup is None and decision.allowed and key is not None and cache is not None:
        lookup = await cache.lookup(key)
    if not decision.allowed:
        if decision.refused_by == "rate_limit":
            metrics.count_rate_limited()
        return Admission(False, decision.retry_after, None, None, decision.refused_by)
    if cache is None:
        metrics.count_cache("off")
        return Admission(True, 0, None, "off")
    if lookup is None:
        return Admission(True, 0, None, None)
    metrics.count_cache(lookup.result)
    return Admission(True, 0, lookup.value, lookup.result)


def make_rate_limiter(rate: Rate, link: RedisLink | None) -> RateLimiter:
    """Shared limits through Redis when configured, else per-process ones."""
    return RedisRateLimiter(link, rate) if link is not None else LocalRateLimiter(rate)
