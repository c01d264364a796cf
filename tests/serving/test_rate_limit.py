"""Sliding-window rate limits, in Redis and in-process, and the combined admission call."""

from __future__ import annotations

import asyncio
import functools

import pytest
from prometheus_client import REGISTRY

from launchers.redis_process import RedisServer
from serving.cache import LocalCache, RedisCache, cache_key
from serving.rate_limit import (
    Decision,
    Guard,
    LocalRateLimiter,
    Rate,
    RateLimiter,
    RedisRateLimiter,
    check_and_get,
    make_rate_limiter,
    parse_rate,
    rate_limit_key,
)
from serving.redis_link import RedisLink
from tests.serving.async_helpers import FakeClock, eventually, fast_link

pytestmark = pytest.mark.anyio

PER_MINUTE = Rate(1000, 60)


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# Parsing.


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("1000/minute", Rate(1000, 60)),
        ("10/second", Rate(10, 1)),
        ("5000/hour", Rate(5000, 3600)),
        (" 7 / Minutes ", Rate(7, 60)),
    ],
)
def test_parse_rate(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "1000", "1000/day", "0/minute", "-1/second", "x/hour"])
def test_parse_rate_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="N/second, N/minute or N/hour"):
        parse_rate(text)


# The exactness test, for both limiters.


async def assert_exact_at_n_plus_one(limiter: RateLimiter) -> None:
    """1,000 accepted, the 1,001st refused, another client untouched."""
    decisions = [await limiter.check("client-a") for _ in range(1001)]
    assert all(d.allowed for d in decisions[:1000])
    refused = decisions[1000]
    assert not refused.allowed
    assert 1 <= refused.retry_after <= 60
    assert await limiter.check("client-b") == Decision(True, 0)
    assert not (await limiter.check("client-a")).allowed


async def test_local_limit_is_exact() -> None:
    await assert_exact_at_n_plus_one(LocalRateLimiter(PER_MINUTE))


async def test_redis_limit_is_exact(redis: RedisServer) -> None:
    limiter = RedisRateLimiter(fast_link(redis.url), PER_MINUTE)
    await assert_exact_at_n_plus_one(limiter)
    assert limiter.link.failures == 0
    stored = await limiter.link.run(lambda c: c.zcard(rate_limit_key("client-a")))
    assert stored == 1000, "refused requests are not recorded"
    await limiter.link.close()


async def test_redis_limit_is_exact_under_concurrency(redis: RedisServer) -> None:
    """The script is atomic: 1,001 calls in flight at once still admit exactly 1,000.

    A generous timeout, so that the burst queues for connections instead of tripping the
    breaker (which would rightly switch to the per-process fallback).
    """
    limiter = RedisRateLimiter(RedisLink(redis.url, timeout_ms=10_000), PER_MINUTE)
    decisions = await asyncio.gather(*(limiter.check("client-a") for _ in range(1001)))
    assert limiter.link.failures == 0
    assert sum(d.allowed for d in decisions) == 1000
    await limiter.link.close()


async def test_two_workers_share_the_limit_through_redis(redis: RedisServer) -> None:
    worker_1 = RedisRateLimiter(fast_link(redis.url), PER_MINUTE)
    worker_2 = RedisRateLimiter(fast_link(redis.url), PER_MINUTE)
    decisions = [await (worker_1, worker_2)[i % 2].check("client-a") for i in range(1000)]
    assert all(d.allowed for d in decisions)
    assert not (await worker_1.check("client-a")).allowed
    assert not (await worker_2.check("client-a")).allowed
    assert (await worker_2.check("client-b")).allowed
    await worker_1.link.close()
    await worker_2.link.close()


# Sliding, not fixed, windows.


async def test_local_window_slides() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(Rate(3, 10), clock=clock)
    for offset in (0, 5, 9):
        clock.now = 1000 + offset
        assert limiter.decide("a").allowed
    clock.now = 1009.5
    assert limiter.decide("a") == Decision(False, 1)  # the request at 1000 leaves at 1010
    clock.now = 1010.01
    assert limiter.decide("a").allowed
    assert limiter.decide("a") == Decision(False, 5)  # next to leave: 1005, 4.99 s away


async def test_local_retry_after_counts_whole_seconds() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(Rate(1, 60), clock=clock)
    assert limiter.decide("a").allowed
    clock.now += 0.5
    assert limiter.decide("a") == Decision(False, 60)  # 59.5 s, rounded up


async def test_local_forgets_idle_clients() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(Rate(1, 10), clock=clock)
    for index in range(100):
        limiter.decide(f"client-{index}")
    clock.now += 11
    limiter.decide("late")
    assert set(limiter._accepted) == {"late"}


async def test_redis_window_slides(redis: RedisServer) -> None:
    limiter = RedisRateLimiter(fast_link(redis.url), Rate(5, 1))
    assert all([(await limiter.check("a")).allowed for _ in range(5)])
    assert await limiter.check("a") == Decision(False, 1)

    async def allowed_again() -> bool:
        return (await limiter.check("a")).allowed

    await eventually(allowed_again, timeout=5)
    ttl_ms = await limiter.link.run(lambda c: c.pttl(rate_limit_key("a")))
    assert ttl_ms is not None and 0 < ttl_ms <= 1000, "idle clients expire from Redis"
    await limiter.link.close()


# Redis faults.


async def test_killed_redis_falls_back_to_local_limits_then_recovers(redis: RedisServer) -> None:
    """The worker's own window already holds the request accepted before the outage: the
    limit stays N per worker across it (the old fallback started empty: N + 1 here)."""
    link = fast_link(redis.url)
    limiter = RedisRateLimiter(link, Rate(3, 60))
    assert (await limiter.check("a")).allowed
    redis.kill()
    decisions = [await limiter.check("a") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, False, False]
    assert decisions[-1].retry_after >= 1
    assert not link.up

    redis.start()

    async def decided_in_redis() -> bool:
        await limiter.check("b")
        return await link.run(lambda c: c.exists(rate_limit_key("b"))) == 1

    await eventually(decided_in_redis)
    await link.close()


# check_and_get: rate limit and cache look-up together.


async def test_check_and_get_in_one_script(redis: RedisServer) -> None:
    link = fast_link(redis.url)
    limiter = RedisRateLimiter(link, Rate(3, 60))
    cache = RedisCache(link, ttl_seconds=60)
    key = cache_key("v1", b"request")
    hits_before = counter("churn_cache_requests_total", result="hit")
    limited_before = counter("churn_rate_limited_total")

    first = await check_and_get(limiter, cache, "client", key)
    assert first == (True, 0, None, "miss", None)
    await cache.set(key, b"answer", "cust")
    second = await check_and_get(limiter, cache, "client", key)
    assert second == (True, 0, b"answer", "hit", None)
    assert (await check_and_get(limiter, cache, "client", None)).cache_result is None
    refused = await check_and_get(limiter, cache, "client", key)
    assert not refused.allowed and refused.retry_after >= 1
    assert refused.cached is None and refused.cache_result is None

    assert cache.outcomes == {"miss": 1, "hit": 1}
    assert counter("churn_cache_requests_total", result="hit") == hits_before + 1
    assert counter("churn_rate_limited_total") == limited_before + 1
    await link.close()


async def test_check_and_get_when_redis_is_down(redis: RedisServer) -> None:
    link = fast_link(redis.url)
    limiter = RedisRateLimiter(link, Rate(2, 60))
    cache = RedisCache(link, ttl_seconds=60)
    redis.kill()
    key = cache_key("v1", b"request")
    results = [await check_and_get(limiter, cache, "client", key) for _ in range(3)]
    assert results[0] == (True, 0, None, "error", None)
    assert results[1] == (True, 0, None, "error", None)
    assert not results[2].allowed and results[2].cache_result is None
    await link.close()


async def test_check_and_get_in_process() -> None:
    limiter = LocalRateLimiter(Rate(2, 60))
    cache = LocalCache(max_entries=10, ttl_seconds=60)
    await cache.set("k", b"answer", "cust")
    assert await check_and_get(limiter, cache, "client", "k") == (True, 0, b"answer", "hit", None)
    assert await check_and_get(limiter, None, "client", "k") == (True, 0, None, "off", None)
    assert not (await check_and_get(limiter, cache, "client", "k")).allowed


async def test_check_and_get_with_separate_links(redis: RedisServer) -> None:
    limiter = RedisRateLimiter(fast_link(redis.url), Rate(5, 60))
    cache = RedisCache(fast_link(redis.url), ttl_seconds=60)
    await cache.set("k", b"answer", "cust")
    assert await check_and_get(limiter, cache, "client", "k") == (True, 0, b"answer", "hit", None)
    await limiter.link.close()
    await cache.link.close()


def test_make_rate_limiter() -> None:
    assert isinstance(make_rate_limiter(Rate(1, 1), None), LocalRateLimiter)
    shared = make_rate_limiter(Rate(1, 1), RedisLink("redis://127.0.0.1:1/0"))
    assert isinstance(shared, RedisRateLimiter)


async def test_redis_restarted_empty_does_not_reopen_the_window(redis: RedisServer) -> None:
    """Redis comes back with nothing in it: this worker still remembers what it accepted,
    so the client does not get a fresh N (the old code let N more through)."""
    link = fast_link(redis.url)
    limiter = RedisRateLimiter(link, Rate(3, 60))
    assert all([(await limiter.check("a")).allowed for _ in range(3)])
    redis.restart()

    async def decided_in_redis() -> bool:
        await limiter.check("b")
        return await link.run(lambda c: c.exists(rate_limit_key("b"))) == 1

    await eventually(decided_in_redis)
    refused = await limiter.check("a")
    assert not refused.allowed and refused.retry_after >= 1
    assert await link.run(lambda c: c.exists(rate_limit_key("a"))) == 0, "refused locally"
    await link.close()


async def test_two_workers_through_an_outage_get_at_most_n_each(redis: RedisServer) -> None:
    """The stated guarantee: before, during and after an outage, N × workers at most."""
    workers = [RedisRateLimiter(fast_link(redis.url), Rate(4, 60)) for _ in range(2)]
    accepted = [(await workers[0].check("a")).allowed for _ in range(3)]
    accepted += [(await workers[1].check("a")).allowed for _ in range(3)]
    assert accepted == [True] * 4 + [False] * 2, "exactly N while Redis is up"
    redis.kill()
    accepted += [(await worker.check("a")).allowed for worker in workers for _ in range(5)]
    redis.start()
    for worker in workers:
        await eventually(functools.partial(_decided_in_redis, worker))
        accepted += [(await worker.check("a")).allowed for _ in range(5)]
    assert sum(accepted) == 4 * 2
    for worker in workers:
        await worker.link.close()


async def _decided_in_redis(limiter: RedisRateLimiter) -> bool:
    client = f"probe-{id(limiter)}"
    await limiter.check(client)
    return await limiter.link.run(lambda c: c.exists(rate_limit_key(client))) == 1


def test_local_reserve_release_and_peek() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(Rate(2, 10), clock=clock)
    assert limiter.peek("a") == Decision(True, 0)
    first, when = limiter.reserve("a")
    assert first.allowed and when == clock.now
    clock.now += 1
    assert limiter.decide("a").allowed
    assert limiter.peek("a") == Decision(False, 9), "full: the first leaves in 9 s"
    limiter.release("a", when)
    assert limiter.peek("a").allowed, "a released request no longer counts"
    assert limiter.decide("a").allowed
    assert not limiter.decide("a").allowed


async def test_a_guard_refuses_in_the_admission_script_and_records_nothing(
    redis: RedisServer,
) -> None:
    link = fast_link(redis.url)
    failures = RedisRateLimiter(link, Rate(2, 60))
    requests = RedisRateLimiter(link, Rate(100, 60))
    cache = RedisCache(link, ttl_seconds=60)
    guard = Guard(rate_limit_key("authfail:10.0.0.1"), failures.rate)
    assert (await check_and_get(requests, cache, "client", "k", guard)).allowed
    for _ in range(2):
        assert (await failures.check("authfail:10.0.0.1")).allowed
    refused = await check_and_get(requests, cache, "client", "k", guard)
    assert refused[:2] == (False, refused.retry_after) and 1 <= refused.retry_after <= 60
    assert refused.refused_by == "auth_failures"
    assert (await check_and_get(requests, None, "client", None, guard)).refused_by == (
        "auth_failures"
    )
    assert await link.run(lambda c: c.zcard(rate_limit_key("client"))) == 1, "not recorded"
    assert len(requests.local._accepted["client"]) == 1, "released locally too"
    other = Guard(rate_limit_key("authfail:10.0.0.2"), failures.rate)
    assert (await check_and_get(requests, cache, "client", "k", other)).allowed
    assert not (await failures.peek_shared("authfail:10.0.0.1")).allowed
    assert (await failures.peek_shared("authfail:10.0.0.2")).allowed
    await link.close()
