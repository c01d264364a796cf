"""Exact sliding-window rate limits: at most N requests per client in *any* window.

A fixed window lets 2N through around a boundary and a token bucket refills mid-window, so
each client keeps the times of its accepted requests (a Redis sorted set, shared by all
workers, or a deque in-process) and a request is accepted only while fewer than N of them
are younger than the window. Refused requests are not recorded, so a client that keeps
hammering gets through again as soon as its oldest request leaves the window.

``check_and_get`` is the per-request entry point: with Redis it decides the rate limit and
reads the cache in one Lua script, i.e. one round trip.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple, Protocol

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


class Decision(NamedTuple):
    """Whether to serve; if not, the whole seconds (≥ 1) to put in ``Retry-After``."""

    allowed: bool
    retry_after: int


ALLOWED = Decision(True, 0)


class Admission(NamedTuple):
    """Outcome of :func:`check_and_get`: the rate-limit decision and the cache look-up."""

    allowed: bool
    retry_after: int  # whole seconds ≥ 1 when refused, else 0
    cached: bytes | None  # the cached response on a hit
    cache_result: CacheResult | None  # None: refused, or no key (not cacheable)


class RateLimiter(Protocol):
    """What the middleware needs; both limiters implement it."""

    rate: Rate

    async def check(self, client_id: str) -> Decision: ...


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
    """Per-process limits: used without Redis, and by RedisRateLimiter while Redis is down."""

    def __init__(self, rate: Rate, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._accepted: dict[str, deque[float]] = {}
        self._next_sweep = clock() + rate.window_seconds

    def decide(self, client_id: str) -> Decision:
        """Accept (and record) the request if fewer than N were accepted in the window."""
        now = self._clock()
        self._sweep_idle(now)
        times = self._accepted.setdefault(client_id, deque())
        oldest_allowed = now - self.rate.window_seconds
        while times and times[0] <= oldest_allowed:
            times.popleft()
        if len(times) >= self.rate.limit:
            return Decision(False, _retry_after(times[0] - oldest_allowed))
        times.append(now)
        return ALLOWED

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
_SLIDING_WINDOW = LuaScript(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - window))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tonumber(oldest[2]) + window - now}
end
redis.call('ZADD', KEYS[1], string.format('%.0f', now), ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if KEYS[2] then
  return {1, 0, redis.call('GET', KEYS[2])}
end
return {1, 0}
"""
)


class RedisRateLimiter:
    """Limits shared by all workers through Redis; falls back to ``self.fallback`` when down.

    While Redis is down each worker enforces the limit on its own, so a client may get up
    to N per worker: a looser limit for a few seconds rather than refusing everyone.
    """

    def __init__(self, link: RedisLink, rate: Rate) -> None:
        self.link = link
        self.rate = rate
        self.fallback = LocalRateLimiter(rate)
        self._script = CoalescedScript(link, _SLIDING_WINDOW)
        self._member_prefix = f"{os.urandom(6).hex()}:"  # unique across workers
        self._sequence = itertools.count()

    async def check(self, client_id: str) -> Decision:
        """Decide in Redis (one round trip), or in-process if Redis is down."""
        decision, _ = await self.check_with_get(client_id, None)
        return decision

    async def check_with_get(
        self, client_id: str, cache_key: str | None
    ) -> tuple[Decision, CacheLookup | None]:
        """Decide and, if allowed and ``cache_key`` is given, GET it in the same script.

        The look-up is None when refused or without a key; its result is "error" when
        Redis was down (the decision then comes from the fallback).
        """
        keys = [rate_limit_key(client_id)] + ([cache_key] if cache_key else [])
        window_us = self.rate.window_seconds * 1_000_000
        args = [self.rate.limit, window_us, self.rate.window_seconds * 1000, self._member()]
        reply = await self._script(keys, args)
        if reply is None:
            decision = self.fallback.decide(client_id)
            lookup = CacheLookup(None, "error") if cache_key and decision.allowed else None
            return decision, lookup
        if not reply[0]:
            return Decision(False, _retry_after(int(reply[1]) / 1_000_000)), None
        if not cache_key:
            return ALLOWED, None
        value = reply[2]
        lookup = CacheLookup(value, "hit") if value is not None else CacheLookup(None, "miss")
        return ALLOWED, lookup

    def _member(self) -> str:
        return f"{self._member_prefix}{next(self._sequence)}"


async def check_and_get(
    limiter: RateLimiter, cache: Cache | None, client_id: str, key: str | None
) -> Admission:
    """Rate-limit ``client_id`` and, if allowed, look ``key`` up; records the metrics.

    One Redis round trip when both use the same link, else two cheap calls (in-process ones
    cost nothing). ``key=None`` means "not cacheable"; ``cache=None`` means the cache is off.
    """
    if (
        key is not None
        and isinstance(limiter, RedisRateLimiter)
        and isinstance(cache, RedisCache)
        and cache.link is limiter.link
    ):
        decision, lookup = await limiter.check_with_get(client_id, key)
        if lookup is not None:
            cache.count(lookup)
    else:
        decision = await limiter.check(client_id)
        lookup = None
        if decision.allowed and key is not None and cache is not None:
            lookup = await cache.lookup(key)
    if not decision.allowed:
        metrics.count_rate_limited()
        return Admission(False, decision.retry_after, None, None)
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
