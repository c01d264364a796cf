"""Failed authentications per client address (in-process and shared through Redis)."""

from __future__ import annotations

import pytest

from launchers.redis_process import RedisServer
from serving.auth_limit import AuthFailureLimit, client_address, refusal_body
from serving.rate_limit import LocalRateLimiter, Rate, RedisRateLimiter, check_and_get
from tests.serving.async_helpers import FakeClock, fast_link

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("client", "address"),
    [
        (("203.0.113.7", 5000), "203.0.113.7"),
        (("2001:db8:1:2:aaaa::1", 5000), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:ffff::9", 1), "2001:db8:1:2::/64"),
        (None, "unknown"),
    ],
)
def test_client_address_groups_ipv6_by_64(client: tuple[str, int] | None, address: str) -> None:
    assert client_address({"client": client}) == address


def test_refusal_body_names_the_limit() -> None:
    body = refusal_body("auth_failures", 12, "1000/minute", "20/minute")
    assert body == {
        "error": "too many failed authentications from this address (limit 20/minute); "
        "retry in 12 s"
    }
    assert refusal_body("rate_limit", 3, "1000/minute", "20/minute") == {
        "error": "rate limit 1000/minute exceeded; retry in 3 s"
    }


async def test_an_address_is_shut_out_after_n_failures_until_the_window_frees() -> None:
    clock = FakeClock()
    limit = AuthFailureLimit(LocalRateLimiter(Rate(3, 60), clock=clock))
    assert [(await limit.on_failure("10.0.0.1")).allowed for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    refused = limit.blocked_here("10.0.0.1")
    assert not refused.allowed and refused.refused_by == "auth_failures"
    assert refused.retry_after == 60
    assert (await limit.blocked("10.0.0.1")) == refused
    assert limit.blocked_here("10.0.0.2").allowed, "other addresses are not affected"
    assert limit.guard("10.0.0.1") is None, "in-process: nothing for Redis to check"
    clock.now += 60.5
    assert limit.blocked_here("10.0.0.1").allowed
    assert (await limit.on_failure("10.0.0.1")).allowed


async def test_failures_counted_by_one_worker_shut_the_address_out_on_another(
    redis: RedisServer,
) -> None:
    workers = [AuthFailureLimit.build(Rate(4, 60), fast_link(redis.url)) for _ in range(2)]
    verdicts = [(await workers[i % 2].on_failure("10.0.0.1")).allowed for i in range(6)]
    assert verdicts == [True] * 4 + [False] * 2, "exactly N failures across the workers"
    second = workers[1]
    assert second.blocked_here("10.0.0.1").allowed, "this worker saw only two"
    assert not (await second.blocked("10.0.0.1")).allowed, "but Redis saw four"
    requests = RedisRateLimiter(fast_link(redis.url), Rate(100, 60))
    guard = second.guard("10.0.0.1")
    assert guard is not None
    admission = await check_and_get(requests, None, "client", None, guard)
    assert not admission.allowed and admission.refused_by == "auth_failures"
    assert (await check_and_get(requests, None, "client", None, second.guard("10.0.0.2"))).allowed
    await requests.link.close()
    for worker in workers:
        assert isinstance(worker.limiter, RedisRateLimiter)
        await worker.limiter.link.close()
