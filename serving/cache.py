"""Prediction cache: Redis (shared by all workers) or in-process (TTL + LRU).

A response depends only on the model version and the request, so the key is the version
plus a hash of the canonical request bytes: a new model never serves an old answer. Each
entry is also listed under every customer it describes, so a deletion request can remove
them all (``forget_customer``). A Redis failure is a miss, never an exception.

Cached values never hold the raw customer id (``cache_value``): the key already tells one
customer's entry from another's, and a hit puts the request's own id back
(``answer_from_cache``).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import orjson
from redis.asyncio import Redis

from core.schema import ID_COLUMN
from serving.deletions import FILE_NAME as DELETIONS_FILE
from serving.deletions import DeletionNotices
from serving.metrics import CacheResult
from serving.redis_link import LuaScript, RedisLink

if TYPE_CHECKING:
    from core.settings import Settings

KEY_PREFIX = "churn:pred:"
CUSTOMER_PREFIX = "churn:cust:"
TOMBSTONE_PREFIX = "churn:gone:"
"""A deleted customer's marker: no entry of theirs is stored for one TTL after deletion."""


class CacheLookup(NamedTuple):
    """A cached response (None unless ``result == "hit"``) and what happened, for metrics."""

    value: bytes | None
    result: CacheResult


class CacheUnavailable(RuntimeError):
    """The cache could not be reached, so a deletion could not be confirmed: retry later."""


class Cache(Protocol):
    """What the middleware needs; both caches implement it."""

    outcomes: Counter[str]

    async def lookup(self, key: str) -> CacheLookup: ...

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, customer_hash: str | Iterable[str]) -> None: ...

    def remember(self, key: str, value: bytes, customer_hash: str) -> None: ...

    async def forget_customer(self, customer_hash: str) -> int: ...


def cache_key(model_identity: str, canonical_request: bytes) -> str:
    """``churn:pred:{model}:{sha256}``: another model (the service passes its version and
    content checksum) never sees an old entry."""
    return f"{KEY_PREFIX}{model_identity}:{hashlib.sha256(canonical_request).hexdigest()}"


def cache_value(prediction: dict[str, Any]) -> bytes:
    """A `/predict` answer as cached: everything but the customer id."""
    return orjson.dumps({k: v for k, v in prediction.items() if k != ID_COLUMN})


def answer_from_cache(cached: bytes, customer_id: str) -> dict[str, Any]:
    """A cached value as the answer to this request: its own customer id first."""
    answer = orjson.loads(cached)
    answer.pop(ID_COLUMN, None)  # an entry written before ids were left out
    return {ID_COLUMN: customer_id, **answer}


def customer_index_key(customer_hash: str) -> str:
    """The Redis set listing a customer's cache entries."""
    return f"{CUSTOMER_PREFIX}{customer_hash}"


def tombstone_key(customer_hash: str) -> str:
    """The Redis key that marks a customer as deleted (for one cache TTL)."""
    return f"{TOMBSTONE_PREFIX}{customer_hash}"


def _customers(customer_hash: str | Iterable[str]) -> tuple[str, ...]:
    """One customer or several (a batch response describes many)."""
    return (customer_hash,) if isinstance(customer_hash, str) else tuple(customer_hash)


# Entries and their customer indexes, all at once: ARGV = ttl, then per key its value, the
# number of customers and their hashes. An entry of a customer deleted within the last TTL
# (a tombstone key exists) is skipped: it may be an answer computed before the deletion,
# written late by another worker. One reply to parse, however many entries.
_STORE = LuaScript(
    f"""
local ttl = tonumber(ARGV[1])
local at = 2
local stored = 0
for _, key in ipairs(KEYS) do
  local customers = tonumber(ARGV[at + 1])
  local deleted = false
  for i = 1, customers do
    if redis.call('EXISTS', '{TOMBSTONE_PREFIX}' .. ARGV[at + 1 + i]) == 1 then deleted = true end
  end
  if not deleted then
    redis.call('SET', key, ARGV[at], 'EX', ttl)
    for i = 1, customers do
      local index = '{CUSTOMER_PREFIX}' .. ARGV[at + 1 + i]
      redis.call('SADD', index, key)
      redis.call('EXPIRE', index, ttl)
    end
    stored = stored + 1
  end
  at = at + 2 + customers
end
return stored
"""
)

# Atomic, so an entry written concurrently is either deleted or refused by the tombstone
# (KEYS[2], kept for ARGV[1] seconds: one cache TTL, the longest an entry could live).
_FORGET = LuaScript(
    """
redis.call('SET', KEYS[2], '1', 'EX', tonumber(ARGV[1]))
local members = redis.call('SMEMBERS', KEYS[1])
local removed = 0
for _, key in ipairs(members) do
  removed = removed + redis.call('DEL', key)
end
redis.call('DEL', KEYS[1])
return removed
"""
)


class RedisCache:
    """Entries shared by every worker; the per-customer index sets expire with them."""

    def __init__(self, link: RedisLink, ttl_seconds: int) -> None:
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be positive, not {ttl_seconds}")
        self.link = link
        self.ttl = ttl_seconds
        self.outcomes: Counter[str] = Counter()
        self._pending: list[tuple[str, bytes, tuple[str, ...]]] = []
        self._writes: set[asyncio.Task[None]] = set()

    async def lookup(self, key: str) -> CacheLookup:
        """Hit, miss, or error (Redis down or failed: served as a miss)."""
        boxed = await self.link.run(lambda client: _get_boxed(client, key))
        return self.count(_unbox(boxed))

    async def get(self, key: str) -> bytes | None:
        """The cached bytes, or None on a miss or a Redis failure."""
        return (await self.lookup(key)).value

    async def set(self, key: str, value: bytes, customer_hash: str | Iterable[str]) -> None:
        """Store with the TTL and index under each customer, in one round trip."""
        await self._write([(key, value, _customers(customer_hash))])

    def remember(self, key: str, value: bytes, customer_hash: str) -> None:
        """Store soon, without waiting: the answers of one moment (an adaptive batch) are
        written together in one round trip, not one per request."""
        self._pending.append((key, value, (customer_hash,)))
        if len(self._pending) == 1:
            task = asyncio.get_running_loop().create_task(self._write_pending())
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def _write_pending(self) -> None:
        entries, self._pending = self._pending, []
        await self._write(entries)

    async def _write(self, entries: list[tuple[str, bytes, tuple[str, ...]]]) -> None:
        keys: list[str] = []
        args: list[bytes | str | int] = [self.ttl]
        for key, value, customers in entries:
            keys.append(key)
            args += [value, len(customers), *customers]
        await self.link.run(lambda client: _STORE(client, keys, args))

    async def forget_customer(self, customer_hash: str) -> int:
        """Delete every entry of the customer, in every worker and replica, and refuse new
        ones for one TTL (a late write of an answer computed before the deletion, from any
        worker, is skipped). Raises CacheUnavailable if Redis is down."""
        # Not yet written entries of this customer must not be written after the deletion.
        self._pending = [entry for entry in self._pending if customer_hash not in entry[2]]
        keys = [customer_index_key(customer_hash), tombstone_key(customer_hash)]
        removed = await self.link.run(lambda client: _FORGET(client, keys, [self.ttl]), force=True)
        if removed is None:
            raise CacheUnavailable("Redis is unavailable; entries expire within the cache TTL")
        return int(removed)

    def count(self, found: CacheLookup) -> CacheLookup:
        """Record a look-up's result (also used by the combined rate-limit + cache call)."""
        self.outcomes[found.result] += 1
        return found


async def _get_boxed(client: Redis, key: str) -> tuple[bytes | None]:
    """GET in a 1-tuple, so that a miss is distinguishable from a failed call (None)."""
    value: bytes | None = await client.get(key)  # type: ignore[assignment]  # no decoding
    return (value,)


def _unbox(boxed: tuple[bytes | None] | None) -> CacheLookup:
    if boxed is None:
        return CacheLookup(None, "error")
    value = boxed[0]
    return CacheLookup(value, "hit") if value is not None else CacheLookup(None, "miss")


class _Entry(NamedTuple):
    expires_at: float
    value: bytes
    customers: tuple[str, ...]


class LocalCache:
    """Per-process cache for when REDIS_URL is unset: at most ``max_entries``, LRU evicted.

    With several workers each has its own copy; ``notices`` (the host's shared deletion
    file) carries a deletion to the others: every look-up and store first drops the
    entries of customers deleted by any worker, and no entry of a customer deleted within
    the last TTL is stored (it may be an answer computed before the deletion).
    """

    def __init__(
        self,
        max_entries: int,
        ttl_seconds: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        notices: DeletionNotices | None = None,
    ) -> None:
        if max_entries <= 0 or ttl_seconds <= 0:
            raise ValueError("max_entries and ttl_seconds must be positive")
        self.max_entries = max_entries
        self.ttl = ttl_seconds
        self.outcomes: Counter[str] = Counter()
        self._clock = clock
        self._notices = notices
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._by_customer: dict[str, set[str]] = {}
        self._deleted: dict[str, float] = {}
        """Customers deleted recently → when they may be cached again."""
        self._next_sweep = clock() + ttl_seconds

    def __len__(self) -> int:
        return len(self._entries)

    async def lookup(self, key: str) -> CacheLookup:
        """Hit or miss; a hit becomes the most recently used entry."""
        self._apply_notices()
        entry = self._entries.get(key)
        if entry is None:
            return self.count(CacheLookup(None, "miss"))
        if entry.expires_at <= self._clock():
            self._remove(key)
            return self.count(CacheLookup(None, "miss"))
        self._entries.move_to_end(key)
        return self.count(CacheLookup(entry.value, "hit"))

    async def get(self, key: str) -> bytes | None:
        """The cached bytes, or None."""
        return (await self.lookup(key)).value

    async def set(self, key: str, value: bytes, customer_hash: str | Iterable[str]) -> None:
        """Store, evicting the least recently used entries beyond ``max_entries``."""
        self._store(key, value, _customers(customer_hash))

    def _store(self, key: str, value: bytes, customers: tuple[str, ...]) -> None:
        self._apply_notices()
        now = self._clock()
        self._sweep_expired(now)
        if self._deleted and any(self._deleted.get(c, 0.0) > now for c in customers):
            return
        if key in self._entries:
            self._remove(key)
        self._entries[key] = _Entry(now + self.ttl, value, customers)
        for customer in customers:
            self._by_customer.setdefault(customer, set()).add(key)
        while len(self._entries) > self.max_entries:
            self._remove(next(iter(self._entries)))

    def remember(self, key: str, value: bytes, customer_hash: str) -> None:
        """Store now (an in-process cache has no round trip to save)."""
        self._store(key, value, (customer_hash,))

    async def forget_customer(self, customer_hash: str) -> int:
        """Delete the customer's entries here and, through the notices, in every other
        worker of the host before their next look-up; the count of live ones removed here.
        Raises CacheUnavailable if the notice could not be written."""
        if self._notices is not None:
            try:
                self._notices.publish(customer_hash)
            except OSError as error:
                raise CacheUnavailable(f"deletion notice not written: {error}") from error
        return self._drop_customer(customer_hash)

    def _drop_customer(self, customer_hash: str) -> int:
        now = self._clock()
        self._deleted[customer_hash] = now + self.ttl
        removed = 0
        for key in list(self._by_customer.get(customer_hash, ())):
            entry = self._remove(key)
            removed += entry is not None and entry.expires_at > now
        return removed

    def _apply_notices(self) -> None:
        """Drop the entries of customers another worker deleted since the last call."""
        if self._notices is None:
            return
        deleted = self._notices.poll()
        if deleted is None:  # unknowable: forget everything
            self._entries.clear()
            self._by_customer.clear()
            return
        for customer_hash in deleted:
            self._drop_customer(customer_hash)

    def count(self, found: CacheLookup) -> CacheLookup:
        """Record a look-up's result."""
        self.outcomes[found.result] += 1
        return found

    def _remove(self, key: str) -> _Entry | None:
        entry = self._entries.pop(key, None)
        for customer in entry.customers if entry else ():
            keys = self._by_customer.get(customer)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_customer[customer]
        return entry

    def _sweep_expired(self, now: float) -> None:
        """Once per TTL, drop expired entries so personal data does not outlive the TTL."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.ttl
        for key in [k for k, e in self._entries.items() if e.expires_at <= now]:
            self._remove(key)
        self._deleted = {c: until for c, until in self._deleted.items() if until > now}


def make_cache(settings: Settings, link: RedisLink | None) -> Cache | None:
    """Redis cache with a link, else in-process; None when the TTL or the size is 0."""
    ttl = settings.cache_ttl_seconds
    if ttl <= 0:
        return None
    if link is not None:
        return RedisCache(link, ttl)
    if settings.local_cache_entries <= 0:
        return None
    notices = DeletionNotices(settings.data_dir / DELETIONS_FILE)
    return LocalCache(settings.local_cache_entries, ttl, notices=notices)
