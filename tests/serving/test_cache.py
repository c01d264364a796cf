"""Prediction caches: keys, hits, TTL, right to deletion, LRU bound, Redis faults."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis

from core.settings import Settings
from launchers.redis_process import RedisServer
from monitoring.identity import customer_hash
from serving.cache import (
    CacheUnavailable,
    LocalCache,
    RedisCache,
    cache_key,
    customer_index_key,
    make_cache,
    tombstone_key,
)
from serving.deletions import FILE_NAME as DELETIONS_FILE
from serving.deletions import DeletionNotices
from serving.redis_link import RedisLink
from tests.serving.async_helpers import FakeClock, eventually, fast_link

pytestmark = pytest.mark.anyio

REQUEST = b'{"customer_id":"c1","tenure":12}'


# Keys.


def test_cache_key_is_version_plus_sha256_of_the_request() -> None:
    key = cache_key("v3", REQUEST)
    prefix, version, digest = key.rsplit(":", 2)
    assert prefix == "churn:pred" and version == "v3"
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert cache_key("v3", REQUEST) == key


def test_another_model_version_or_field_gives_another_key() -> None:
    assert cache_key("v3", REQUEST) != cache_key("v4", REQUEST)
    assert cache_key("v3", REQUEST) != cache_key("v3", REQUEST.replace(b"12", b"13"))


# Redis cache.


async def test_redis_miss_then_hit(redis: RedisServer) -> None:
    cache = RedisCache(fast_link(redis.url), ttl_seconds=60)
    key = cache_key("v1", REQUEST)
    assert (await cache.lookup(key)).result == "miss"
    await cache.set(key, b"answer", "cust-a")
    found = await cache.lookup(key)
    assert found.value == b"answer" and found.result == "hit"
    assert await cache.get(key) == b"answer"
    assert await cache.get(cache_key("v2", REQUEST)) is None, "a new model never hits"
    assert cache.outcomes == {"miss": 2, "hit": 2}
    await cache.link.close()


async def test_redis_entries_and_customer_index_expire(redis: RedisServer) -> None:
    cache = RedisCache(fast_link(redis.url), ttl_seconds=1)
    key = cache_key("v1", REQUEST)
    await cache.set(key, b"answer", "cust-a")
    assert await cache.get(key) == b"answer"
    index_ttl = await cache.link.run(lambda c: c.ttl(customer_index_key("cust-a")))
    assert index_ttl is not None and 0 < index_ttl <= 1

    async def gone() -> bool:
        return await cache.get(key) is None

    await eventually(gone, timeout=5)
    index_exists = await cache.link.run(lambda c: c.exists(customer_index_key("cust-a")))
    assert index_exists == 0
    await cache.link.close()


async def test_redis_forget_customer_removes_only_that_customer(redis: RedisServer) -> None:
    cache = RedisCache(fast_link(redis.url), ttl_seconds=60)
    a1, a2, b1 = (cache_key("v1", body) for body in (b"a1", b"a2", b"b1"))
    batch = cache_key("v1", b"batch a+b")
    await cache.set(a1, b"1", "cust-a")
    await cache.set(a2, b"2", "cust-a")
    await cache.set(b1, b"3", "cust-b")
    await cache.set(batch, b"4", ["cust-a", "cust-b"])
    assert await cache.forget_customer("cust-a") == 3
    assert [await cache.get(k) for k in (a1, a2, b1, batch)] == [None, None, b"3", None]
    assert await cache.forget_customer("cust-a") == 0
    assert await cache.forget_customer("cust-b") == 1  # the batch entry is already gone
    await cache.link.close()


async def test_after_a_deletion_no_worker_stores_the_customer_for_one_ttl(
    redis: RedisServer,
) -> None:
    """Two workers share Redis: one deletes cust-a while the other still holds an answer
    computed before the deletion; its late write must not bring cust-a back."""
    deleting = RedisCache(fast_link(redis.url), ttl_seconds=2)
    late = RedisCache(fast_link(redis.url), ttl_seconds=2)
    a, b, both = (cache_key("v1", body) for body in (b"a", b"b", b"a+b"))
    await late.set(a, b"before", "cust-a")
    assert await deleting.forget_customer("cust-a") == 1
    await late.set(a, b"late", "cust-a")
    await late.set(both, b"late batch", ["cust-b", "cust-a"])
    late.remember(b, b"other customer", "cust-b")

    async def other_written() -> bool:
        return await late.get(b) == b"other customer"

    await eventually(other_written)
    assert [await late.get(a), await late.get(both)] == [None, None]
    tombstone = await late.link.run(lambda c: c.ttl(tombstone_key("cust-a")))
    assert tombstone is not None and 0 < tombstone <= 2

    async def comes_back() -> bool:  # after one TTL the customer is cached normally again
        await late.set(a, b"new", "cust-a")
        return await late.get(a) == b"new"

    await eventually(comes_back, timeout=10)
    await deleting.link.close()
    await late.link.close()


async def test_killed_redis_is_a_miss_and_recovers_without_new_objects(
    redis: RedisServer,
) -> None:
    link = fast_link(redis.url)
    cache = RedisCache(link, ttl_seconds=60)
    key = cache_key("v1", REQUEST)
    await cache.set(key, b"answer", "cust-a")
    assert await cache.get(key) == b"answer"

    redis.kill()
    assert await cache.lookup(key) == (None, "error")
    await cache.set(key, b"answer", "cust-a")  # no exception
    for _ in range(100):
        assert await cache.get(key) is None
    assert link.skipped >= 100, "a down Redis is not contacted per request"
    with pytest.raises(CacheUnavailable):
        await cache.forget_customer("cust-a")

    redis.start()  # empty: nothing was saved
    assert await cache.forget_customer("cust-a") == 0, "a deletion does not wait for the backoff"

    async def hits_again() -> bool:  # cust-a was just deleted: not cached for one TTL
        await cache.set(key, b"fresh", "cust-b")
        return await cache.get(key) == b"fresh"

    await eventually(hits_again)
    assert link.up
    await link.close()


# Local cache.


async def test_local_miss_hit_and_ttl() -> None:
    clock = FakeClock()
    cache = LocalCache(max_entries=10, ttl_seconds=5, clock=clock)
    key = cache_key("v1", REQUEST)
    assert await cache.get(key) is None
    await cache.set(key, b"answer", "cust-a")
    assert await cache.lookup(key) == (b"answer", "hit")
    clock.now += 4.9
    assert await cache.get(key) == b"answer"
    clock.now += 0.2
    assert await cache.lookup(key) == (None, "miss")
    assert len(cache) == 0


async def test_local_ttl_with_the_real_clock() -> None:
    cache = LocalCache(max_entries=10, ttl_seconds=1)
    await cache.set("k", b"v", "cust-a")
    assert await cache.get("k") == b"v"

    async def gone() -> bool:
        return await cache.get("k") is None

    await eventually(gone, timeout=5)


async def test_local_lru_bound() -> None:
    cache = LocalCache(max_entries=3, ttl_seconds=60)
    for name in "abc":
        await cache.set(name, name.encode(), f"cust-{name}")
    assert await cache.get("a") == b"a"  # now "b" is the least recently used
    await cache.set("d", b"d", "cust-d")
    assert len(cache) == 3
    assert await cache.get("b") is None
    assert [await cache.get(k) for k in "acd"] == [b"a", b"c", b"d"]
    assert await cache.forget_customer("cust-b") == 0, "evicted entries leave the index"


async def test_local_forget_customer() -> None:
    cache = LocalCache(max_entries=10, ttl_seconds=60)
    await cache.set("a1", b"1", "cust-a")
    await cache.set("a2", b"2", "cust-a")
    await cache.set("b1", b"3", "cust-b")
    await cache.set("ab", b"4", ("cust-a", "cust-b"))
    assert await cache.forget_customer("cust-a") == 3
    assert [await cache.get(k) for k in ("a1", "a2", "b1", "ab")] == [None, None, b"3", None]
    assert await cache.forget_customer("cust-b") == 1
    assert len(cache) == 0


async def test_local_overwrite_moves_the_entry_to_the_new_customer() -> None:
    cache = LocalCache(max_entries=10, ttl_seconds=60)
    await cache.set("k", b"old", "cust-a")
    await cache.set("k", b"new", "cust-b")
    assert await cache.forget_customer("cust-a") == 0
    assert await cache.get("k") == b"new"


async def test_local_expired_entries_are_swept() -> None:
    clock = FakeClock()
    cache = LocalCache(max_entries=100, ttl_seconds=5, clock=clock)
    for index in range(10):
        await cache.set(f"k{index}", b"v", "cust-a")
    clock.now += 6
    await cache.set("fresh", b"v", "cust-b")
    assert len(cache) == 1, "personal data does not outlive the TTL in memory"


# Factory.


def test_make_cache_follows_the_settings() -> None:
    link = RedisLink("redis://127.0.0.1:1/0")
    assert make_cache(Settings(cache_ttl_seconds=0), link) is None
    assert make_cache(Settings(cache_ttl_seconds=0), None) is None
    assert isinstance(make_cache(Settings(cache_ttl_seconds=30), link), RedisCache)
    local = make_cache(Settings(cache_ttl_seconds=30, local_cache_entries=5), None)
    assert isinstance(local, LocalCache) and local.max_entries == 5
    assert make_cache(Settings(cache_ttl_seconds=30, local_cache_entries=0), None) is None


def test_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RedisCache(RedisLink("redis://127.0.0.1:1/0"), 0)
    with pytest.raises(ValueError):
        LocalCache(0, 10)


async def test_values_are_bytes_not_decoded(redis: RedisServer) -> None:
    cache = RedisCache(fast_link(redis.url), ttl_seconds=60)
    blob = bytes(range(256))
    await cache.set("binary", blob, "cust-a")
    assert await cache.get("binary") == blob
    raw = await cache.link.run(lambda c: _smembers(c, customer_index_key("cust-a")))
    assert raw == {b"binary"}
    await cache.link.close()


async def _smembers(client: Redis, key: str) -> set[bytes | str]:
    return set(await client.smembers(key))  # type: ignore[misc]


async def test_remembered_entries_are_written_together_and_indexed(redis: RedisServer) -> None:
    cache = RedisCache(fast_link(redis.url), ttl_seconds=60)
    keys = [cache_key("v1", f"request {i}".encode()) for i in range(20)]
    for i, key in enumerate(keys):
        cache.remember(key, f"answer {i}".encode(), f"cust-{i % 2}")

    async def all_written() -> bool:
        return [await cache.get(k) for k in keys] == [f"answer {i}".encode() for i in range(20)]

    await eventually(all_written)
    index = await cache.link.run(lambda c: _smembers(c, customer_index_key("cust-1")))
    assert index == {k.encode() for k in keys[1::2]}
    ttl = await cache.link.run(lambda c: c.ttl(keys[0]))
    assert ttl is not None and 0 < ttl <= 60
    await cache.link.close()


async def test_a_deletion_drops_entries_not_yet_written(redis: RedisServer) -> None:
    cache = RedisCache(fast_link(redis.url), ttl_seconds=60)
    mine, other = cache_key("v1", b"mine"), cache_key("v1", b"other")
    cache.remember(mine, b"answer", "cust-a")
    cache.remember(other, b"answer", "cust-b")
    await cache.forget_customer("cust-a")

    async def other_written() -> bool:
        return await cache.get(other) == b"answer"

    await eventually(other_written)
    assert await cache.get(mine) is None
    await cache.link.close()


async def test_local_remember_stores_at_once() -> None:
    cache = LocalCache(max_entries=10, ttl_seconds=60)
    cache.remember("k", b"v", "cust-a")
    assert await cache.get("k") == b"v"
    assert await cache.forget_customer("cust-a") == 1


# Deletion across the workers of one host (no Redis).

HASH_A, HASH_B = (customer_hash(name, b"test-secret") for name in ("cust-a", "cust-b"))


def two_workers(tmp_path: Path, clock: FakeClock) -> tuple[LocalCache, LocalCache]:
    """Two workers' caches sharing the host's notice file, as two processes would."""
    path = tmp_path / DELETIONS_FILE
    return tuple(  # type: ignore[return-value]
        LocalCache(10, 5, clock=clock, notices=DeletionNotices(path)) for _ in range(2)
    )


async def test_a_deletion_in_one_worker_empties_the_other_workers_cache(tmp_path: Path) -> None:
    clock = FakeClock()
    deleting, other = two_workers(tmp_path, clock)
    await other.set("a", b"answer a", HASH_A)
    await other.set("b", b"answer b", HASH_B)
    await deleting.set("a", b"answer a", HASH_A)
    assert await deleting.forget_customer(HASH_A) == 1
    assert await other.lookup("a") == (None, "miss")
    assert await other.get("b") == b"answer b", "other customers stay cached"


async def test_a_late_store_of_a_deleted_customer_is_refused_for_one_ttl(tmp_path: Path) -> None:
    """The other worker scored the customer before the deletion and stores it after."""
    clock = FakeClock()
    deleting, other = two_workers(tmp_path, clock)
    assert await other.get("a") is None  # the look-up before scoring
    await deleting.forget_customer(HASH_A)
    other.remember("a", b"computed before the deletion", HASH_A)
    await other.set("ab", b"batch", (HASH_B, HASH_A))
    assert [await other.get("a"), await other.get("ab")] == [None, None]
    clock.now += 5.1  # one TTL later the customer is cached normally again
    other.remember("a", b"new", HASH_A)
    assert await other.get("a") == b"new"


async def test_a_reset_notice_file_empties_the_cache(tmp_path: Path) -> None:
    clock = FakeClock()
    deleting, other = two_workers(tmp_path, clock)
    await deleting.forget_customer(HASH_B)
    await other.set("a", b"answer a", HASH_A)
    with (tmp_path / DELETIONS_FILE).open("r+b") as file:
        file.write(bytes(8))  # the notice count back to 0
    assert await other.get("a") is None, "unknown deletions: nothing cached is trusted"


async def test_an_unwritable_notice_is_a_failed_deletion(tmp_path: Path) -> None:
    notices = DeletionNotices(tmp_path / DELETIONS_FILE)
    cache = LocalCache(10, 5, notices=notices)
    notices.close()
    with pytest.raises(CacheUnavailable):
        await cache.forget_customer(HASH_A)


def test_notices_carry_whole_hashes_in_order(tmp_path: Path) -> None:
    writer, reader = (DeletionNotices(tmp_path / DELETIONS_FILE) for _ in range(2))
    assert reader.poll() == []
    writer.publish(HASH_A)
    writer.publish(HASH_B)
    assert reader.poll() == [HASH_A, HASH_B]
    assert reader.poll() == []
    assert DeletionNotices(tmp_path / DELETIONS_FILE).poll() == [], "a new worker starts at the end"
    with pytest.raises(ValueError):
        writer.publish("not-a-hash")
