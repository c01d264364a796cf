"""A Redis connection that degrades to "down" instead of slowing requests down.

Redis is an accelerator here (shared cache, shared rate limits), never a dependency: when it
is slow or gone, callers get ``None`` at once and use their in-process fallback. After a
failure the link stays down for a backoff (0.5 s doubling to 5 s) and then lets exactly one
call probe it, so a dead Redis costs a dictionary look-up per request, not a timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from serving import metrics

if TYPE_CHECKING:
    from core.settings import Settings

T = TypeVar("T")
RedisCall = Callable[[Redis], Awaitable[T]]

log = logging.getLogger(__name__)

MIN_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 5.0
_SCHEMES = ("redis", "rediss", "unix")


class RedisLink:
    """One lazily created ``redis.asyncio`` client with a circuit breaker in front of it.

    ``run`` never raises (except ``CancelledError``): a timeout or error counts as a failure,
    marks the link down and returns ``None``. The client is created on first use inside the
    running event loop (and again if the loop changes), so the object can be built at import
    time of the service, before any loop exists.
    """

    def __init__(
        self,
        url: str,
        timeout_ms: int = 100,
        *,
        min_backoff: float = MIN_BACKOFF_SECONDS,
        max_backoff: float = MAX_BACKOFF_SECONDS,
        max_connections: int = 64,
    ) -> None:
        if urlsplit(url).scheme not in _SCHEMES:
            raise ValueError(f"REDIS_URL must start with redis://, rediss:// or unix://: {url!r}")
        self.url = url
        self.max_connections = max_connections
        self.timeout = timeout_ms / 1000
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.failures = 0
        """Calls that reached Redis and failed or timed out."""
        self.skipped = 0
        """Calls answered ``None`` without touching Redis because it was down."""
        self._client: Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._down_until = 0.0  # 0: up; else monotonic time the next probe is allowed
        self._next_backoff = min_backoff
        self._probing = False
        self._reported_up = False  # `churn_redis_up` set to 1 by the first success

    @property
    def up(self) -> bool:
        """False from a failure until a probe succeeds."""
        return self._down_until == 0.0

    async def run(self, fn: RedisCall[T], *, force: bool = False) -> T | None:
        """``await fn(client)`` within the timeout; ``None`` if Redis is down or the call failed.

        ``force`` tries even during a backoff: for rare calls that must not be skipped (a
        deletion), never for per-request ones.
        """
        probe = False if force else self._admit()
        if probe is None:
            self.skipped += 1
            return None
        try:
            async with asyncio.timeout(self.timeout):
                result = await fn(self._client_for_running_loop())
        except asyncio.CancelledError:
            if probe:
                self._probing = False  # let the next call probe instead
            raise
        except (RedisError, OSError, TimeoutError) as error:
            self._failed(error, probe)
            return None
        except Exception as error:  # a bug in fn must not turn into a 500 either
            log.exception("Redis call raised an unexpected error")
            self._failed(error, probe)
            return None
        self._succeeded()
        return result

    async def close(self) -> None:
        """Close the client if it belongs to the running loop (a closed loop's is dropped)."""
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()

    def _admit(self) -> bool | None:
        """None: skip; False: a normal call; True: this call is the one probe after a backoff."""
        if self._down_until == 0.0:
            return False
        if self._probing or time.monotonic() < self._down_until:
            return None
        self._probing = True
        return True

    def _client_for_running_loop(self) -> Redis:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            # A blocking pool queues a burst for a free connection (within the timeout);
            # the default pool raises at 100 in use, which would read as "Redis is down".
            pool = BlockingConnectionPool.from_url(
                self.url,
                max_connections=self.max_connections,
                timeout=self.timeout,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),  # redis-py retries 10 times by default
            )
            self._client = Redis.from_pool(pool)
            self._loop = loop
        return self._client

    def _failed(self, error: BaseException, probe: bool) -> None:
        self.failures += 1
        metrics.count_redis_error()
        now = time.monotonic()
        if self.up:
            metrics.set_redis_up(False)
            log.warning(
                "Redis unreachable (%s: %s); using in-process fallbacks for %.1f s",
                type(error).__name__,
                error,
                self.min_backoff,
            )
            self._down_until = now + self.min_backoff
            self._next_backoff = min(self.min_backoff * 2, self.max_backoff)
        elif probe:
            # Only the probe lengthens the backoff; calls already in flight when Redis went
            # away fail too, and must not push it to the maximum at once.
            self._down_until = now + self._next_backoff
            self._next_backoff = min(self._next_backoff * 2, self.max_backoff)
        if probe:
            self._probing = False

    def _succeeded(self) -> None:
        if not self.up or not self._reported_up:
            if not self.up:
                log.warning("Redis reachable again after %d failed calls", self.failures)
            metrics.set_redis_up(True)
            self._reported_up = True
        self._down_until = 0.0
        self._next_backoff = self.min_backoff
        self._probing = False


class LuaScript:
    """A Lua script run by SHA (one round trip), loaded on the server only when missing."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, client: Redis, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA, falling back to EVAL (which caches the script) after a restart."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)

    async def run_many(
        self, client: Redis, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]
    ) -> list[Any]:
        """Several calls in one pipeline (one round trip); each is still atomic on its own.
        A call that failed because the server lost the script is repeated once it is loaded."""
        replies = await self._pipeline(client, calls)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            await client.script_load(self.source)
            again = await self._pipeline(client, [calls[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def _pipeline(
        self, client: Redis, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]
    ) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for keys, args in calls:
            pipe.evalsha(self.sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))


class CoalescedScript:
    """A Lua script whose calls from one moment of the event loop share a round trip.

    Under load many requests ask Redis the same kind of question at once (rate limit plus
    cache look-up); sending them as one pipeline instead of one call each cut the worker's
    Redis client time by more than half at 64 clients (BENCHMARKS.md). A lone call waits one
    turn of the event loop, a few microseconds. Like `RedisLink.run`, a call answers None
    when Redis is down or failed.
    """

    def __init__(self, link: RedisLink, script: LuaScript) -> None:
        self.link = link
        self.script = script
        self._pending: list[tuple[Sequence[str], Sequence[Any], asyncio.Future[Any]]] = []
        self._flushes: set[asyncio.Task[None]] = set()

    async def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((keys, args, future))
        if len(self._pending) == 1:
            task = loop.create_task(self._flush())
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        return await future

    async def _flush(self) -> None:
        calls, self._pending = self._pending, []
        replies = None
        try:
            replies = await self.link.run(
                lambda client: self.script.run_many(client, [(k, a) for k, a, _ in calls])
            )
        finally:
            for i, (_, _, future) in enumerate(calls):
                if not future.done():
                    future.set_result(None if replies is None else replies[i])


def make_link(settings: Settings) -> RedisLink | None:
    """The link for ``settings.redis_url``; None when Redis is not configured."""
    if not settings.redis_url:
        return None
    return RedisLink(settings.redis_url, settings.redis_timeout_ms)
