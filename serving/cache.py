"""Prediction cache: Redis (shared by all workers) or in-process (TTL + LRU).

A response depends only on the model version and the request, so the key is the version
plus a hash of the canonical request bytes: a new model never serves an old answer. Each
entry is also listed under every customer it describes, so a deletion request can remove
them all (``forget_customer``). A Redis failure is a miss, never an exception.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, NamedTuple, Protocol

from redis.asyncio import Redis

from serving.metrics import CacheResult
from serving.redis_link import LuaScript, RedisLink

if TYPE_CHECKING:
    from training.config import Settings

KEY_PREFIX = "churn:pred:"
CUSTOMER_PREFIX = "churn:cust:"


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


def customer_index_key(customer_hash: str) -> str:
    """The Redis set listing a customer's cache entries."""
    return f"{CUSTOMER_PREFIX}{customer_hash}"


def _customers(customer_hash: str | Iterable[str]) -> tuple[str, ...]:
    """One customer or several (a batch response describes many)."""
    return (customer_hash,) if isinstance(customer_hash, str) else tuple(customer_hash)


# Entries and their customer indexes, all at once: ARGV = ttl, then per key its value, the
# number of customers and their index keys. One reply to parse, however many entries.
_STORE = LuaScript(
    """
local ttl = tonumber(ARGV[1])
local at = 2
for _, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[at], 'EX', ttl)
  local customers = tonumber(ARGV[at + 1])
  for i = 1, customers do
    local index = ARGV[at + 1 + i]
    redis.call('SADD', index, key)
    redis.call('EXPIRE', index, ttl)
  end
  at = at + 2 + customers
end
return #KEYS
"""
)

# Atomic, so an entry written concurrently is either deleted or indexed after the deletion.
_FORGET = LuaScript(
    """
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
            args += [value, len(customers), *map(customer_index_key, customers)]
        await self.link.run(lambda client: _STORE(client, keys, args))

    async def forget_customer(self, customer_hash: str) -> int:
        """Delete every entry of the customer; raises CacheUnavailable if Redis is down."""
        # Not yet written entries of this customer must not be written after the deletion.
        self._pending = [entry for entry in self._pending if customer_hash not in entry[2]]
        index = customer_index_key(customer_hash)
        removed = await self.link.run(lambda client: _FORGET(client, [index], []), force=True)
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

    With several workers each has its own copy, so ``forget_customer`` only clears this
    process; the other workers' copies of that customer expire within ``ttl_seconds``.
    """

    def __init__(
        self, max_entries: int, ttl_seconds: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries <= 0 or ttl_seconds <= 0:
            raise ValueError("max_entries and ttl_seconds must be positive")
        self.max_entries = max_entries
        self.ttl = ttl_seconds
        self.outcomes: Counter[str] = Counter()
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._by_customer: dict[str, set[str]] = {}
        self._next_sweep = clock() + ttl_seconds

    def __len__(self) -> int:
        return len(self._entries)

    async def lookup(self, key: str) -> CacheLookup:
        """Hit or miss; a hit becomes the most recently used entry."""
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
        now = self._clock()
        self._sweep_expired(now)
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
        """Delete this process's entries of the customer; the count of live ones removed."""
        now = self._clock()
        removed = 0
        for key in list(self._by_customer.get(customer_hash, ())):
            entry = self._remove(key)
            removed += entry is not None and entry.expires_at > now
        return removed

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


def make_cache(settings: Settings, link: RedisLink | None) -> Cache | None:
    """Redis cache with a link, else in-process; None when the TTL or the size is 0."""
    ttl = settings.cache_ttl_seconds
    if ttl <= 0:
        return None
    if link is not None:
        return RedisCache(link, ttl)
    if settings.local_cache_entries <= 0:
        return None
    return LocalCache(settings.local_cache_entries, ttl)
