"""RedisLink against a real redis-server: up, killed, hung, restarted; never raises."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from launchers.redis_process import RedisServer
from launchers.server_process import free_port
from serving.redis_link import CoalescedScript, LuaScript, RedisLink

pytestmark = pytest.mark.anyio


def fast_link(url: str) -> RedisLink:
    """Short backoff so recovery tests take milliseconds, not seconds."""
    return RedisLink(url, timeout_ms=200, min_backoff=0.05, max_backoff=0.2)


async def ping(client: Redis) -> bool:
    return bool(await client.ping())


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll ``check`` until true, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.02)


async def test_runs_calls_while_redis_is_up(redis: RedisServer) -> None:
    link = fast_link(redis.url)
    assert await link.run(ping) is True
    assert await link.run(lambda c: c.set("k", b"v")) is True
    assert await link.run(lambda c: c.get("k")) == b"v"
    assert link.up and link.failures == 0 and link.skipped == 0
    await link.close()


async def test_killed_redis_means_none_then_skipped_calls(redis: RedisServer) -> None:
    link = fast_link(redis.url)
    assert await link.run(ping)
    redis.kill()
    assert await link.run(ping) is None
    assert not link.up and link.failures == 1
    # While down, calls are answered at once without touching the network.
    results = [await link.run(ping) for _ in range(50)]
    assert results == [None] * 50
    assert link.skipped == 50 and link.failures == 1
    await link.close()


async def test_reconnects_by_itself_after_a_restart(redis: RedisServer) -> None:
    link = fast_link(redis.url)
    assert await link.run(ping)
    redis.kill()
    assert await link.run(ping) is None
    redis.start()

    async def answered() -> bool:
        return await link.run(ping) is True

    await eventually(answered)
    assert link.up
    await link.close()


async def test_hung_redis_times_out_and_counts_as_down(redis: RedisServer) -> None:
    link = fast_link(redis.url)
    assert await link.run(ping)
    redis.freeze()
    try:
        assert await link.run(ping) is None
        assert not link.up and link.failures == 1
    finally:
        redis.thaw()

    async def answered() -> bool:
        return await link.run(ping) is True

    await eventually(answered)
    await link.close()


async def test_only_one_probe_after_the_backoff() -> None:
    link = fast_link(f"redis://127.0.0.1:{free_port()}/0")  # nobody listens there
    assert await link.run(ping) is None
    assert link.failures == 1
    await asyncio.sleep(0.06)  # past the first backoff (0.05 s)
    results = await asyncio.gather(*(link.run(ping) for _ in range(20)))
    assert results == [None] * 20
    assert link.failures == 2, "exactly one call may probe a down Redis"
    assert link.skipped == 19
    await link.close()


async def test_backoff_doubles_up_to_the_maximum() -> None:
    link = RedisLink(f"redis://127.0.0.1:{free_port()}/0", min_backoff=0.05, max_backoff=0.2)
    waits = []
    for _ in range(4):
        assert await link.run(ping) is None
        waits.append(link._down_until - time.monotonic())
        await asyncio.sleep(max(waits[-1], 0) + 0.01)
    assert waits[0] <= 0.05
    assert 0.05 < waits[1] <= 0.1
    assert 0.1 < waits[2] <= 0.2
    assert 0.1 < waits[3] <= 0.2, "capped at max_backoff"
    await link.close()


async def test_an_error_inside_the_call_is_contained(redis: RedisServer) -> None:
    link = fast_link(redis.url)

    async def broken(client: Redis) -> int:
        await client.ping()
        raise ZeroDivisionError

    assert await link.run(broken) is None
    assert link.failures == 1
    await link.close()


async def test_a_redis_error_reply_is_contained(redis: RedisServer) -> None:
    link = fast_link(redis.url)
    assert await link.run(lambda c: c.set("text", b"abc"))
    assert await link.run(lambda c: c.incr("text")) is None  # ERR not an integer
    assert link.failures == 1
    await link.close()


async def test_lua_script_reloads_after_script_flush(redis: RedisServer) -> None:
    link = fast_link(redis.url)
    script = LuaScript("return tonumber(ARGV[1]) + 1")
    assert await link.run(lambda c: script(c, [], [41])) == 42
    assert await link.run(lambda c: c.script_flush()) is True
    assert await link.run(lambda c: script(c, [], [1])) == 2
    await link.close()


def test_refuses_a_url_that_is_not_redis() -> None:
    with pytest.raises(ValueError, match="redis://"):
        RedisLink("localhost:6379")


async def test_forced_call_ignores_the_backoff(redis: RedisServer) -> None:
    link = RedisLink(redis.url, min_backoff=60)
    redis.kill()
    assert await link.run(ping) is None
    redis.start()
    assert await link.run(ping) is None, "skipped: within the backoff"
    assert await link.run(ping, force=True) is True
    assert link.up
    await link.close()


def test_survives_a_new_event_loop(redis_server: RedisServer) -> None:
    """Built outside any loop (as at service import), used from two successive loops."""
    if not redis_server.ping():
        redis_server.restart()
    link = fast_link(redis_server.url)

    async def ping_then_close() -> bool | None:
        answer = await link.run(ping)
        await link.close()
        return answer

    assert asyncio.run(link.run(ping)) is True  # this loop's client is left behind
    assert asyncio.run(ping_then_close()) is True
    assert link.up and link.failures == 0


class CountingScript(LuaScript):
    """The real script, counting the pipelines it sends."""

    def __init__(self, source: str) -> None:
        super().__init__(source)
        self.pipelines = 0

    async def run_many(self, client: Redis, calls: Any) -> list[Any]:
        self.pipelines += 1
        return await super().run_many(client, calls)


async def test_coalesced_calls_share_round_trips_and_keep_their_answers(
    redis: RedisServer,
) -> None:
    link = fast_link(redis.url)
    script = CountingScript("return {ARGV[1], redis.call('INCR', KEYS[1])}")
    coalesced = CoalescedScript(link, script)
    replies = await asyncio.gather(*(coalesced(["counter"], [f"call-{i}"]) for i in range(50)))
    assert [r[0] for r in replies] == [f"call-{i}".encode() for i in range(50)]
    assert sorted(r[1] for r in replies) == list(range(1, 51)), "each call ran exactly once"
    assert script.pipelines < 5, f"{script.pipelines} round trips for 50 concurrent calls"
    assert await coalesced(["counter"], ["alone"]) == [b"alone", 51]
    await link.close()


async def test_coalesced_calls_survive_a_script_flush(redis: RedisServer) -> None:
    link = fast_link(redis.url)
    coalesced = CoalescedScript(link, LuaScript("return tonumber(ARGV[1]) * 2"))
    assert await coalesced([], [1]) == 2
    assert await link.run(lambda c: c.script_flush()) is True
    assert await asyncio.gather(*(coalesced([], [i]) for i in range(10))) == [
        2 * i for i in range(10)
    ]
    await link.close()


async def test_coalesced_calls_answer_none_while_redis_is_down(redis: RedisServer) -> None:
    link = fast_link(redis.url)
    coalesced = CoalescedScript(link, LuaScript("return 1"))
    assert await coalesced([], []) == 1
    redis.kill()
    assert await asyncio.gather(*(coalesced([], []) for _ in range(10))) == [None] * 10
    await link.close()
