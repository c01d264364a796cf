"""Failed authentications per client address: a key guesser gets N tries per window, not N/s.

Each missing or wrong API key is recorded in a sliding window per client address (shared
through Redis like the rate limits, see `serving/rate_limit.py`). While an address has
`CHURN_AUTH_FAILURE_LIMIT` failures in the window, every protected request from it gets 429
with `Retry-After`, whatever key it carries: a right key then looks exactly like a wrong
one, so guessing cannot go faster than the limit. Refused requests are not recorded, so the
address is let in again as soon as its oldest failure leaves the window.

The address is the TCP peer (`X-Forwarded-For` is not trusted): behind a proxy every client
shares the proxy's address. IPv6 addresses count per /64, the block one host usually holds.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from starlette.types import Scope

from serving.rate_limit import (
    Decision,
    Guard,
    Rate,
    RateLimiter,
    RedisRateLimiter,
    Refusal,
    make_rate_limiter,
    rate_limit_key,
)
from serving.redis_link import RedisLink

_PREFIX = "authfail:"


def client_address(scope: Scope) -> str:
    """The peer address failures count against (an IPv6 address stands for its /64)."""
    client = scope.get("client")
    host = str(client[0]) if client else "unknown"
    if ":" in host:
        try:
            return str(ipaddress.IPv6Network(f"{host}/64", strict=False))
        except ValueError:
            return host
    return host


def refusal_body(
    refused_by: Refusal | None, retry_after: int, rate_text: str, failure_text: str
) -> dict[str, Any]:
    """The 429 body: which limit was hit and when to retry."""
    if refused_by == "auth_failures":
        reason = f"too many failed authentications from this address (limit {failure_text})"
    else:
        reason = f"rate limit {rate_text} exceeded"
    return {"error": f"{reason}; retry in {retry_after} s"}


class AuthFailureLimit:
    """Counts failed authentications per address and says when an address is shut out."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    @classmethod
    def build(cls, rate: Rate, link: RedisLink | None) -> AuthFailureLimit:
        return cls(make_rate_limiter(rate, link))

    async def on_failure(self, address: str) -> Decision:
        """Record a failed authentication if the address is under the limit (answer it
        401/403), else refuse it (429) without recording."""
        return _as_auth(await self.limiter.check(_PREFIX + address))

    def blocked_here(self, address: str) -> Decision:
        """This worker's own verdict (no Redis): the cheap first check of every request."""
        return _as_auth(self.limiter.peek(_PREFIX + address))

    def guard(self, address: str) -> Guard | None:
        """The shared verdict, for the admission script to check in the same round trip."""
        if isinstance(self.limiter, RedisRateLimiter):
            return Guard(rate_limit_key(_PREFIX + address), self.limiter.rate)
        return None

    async def blocked(self, address: str) -> Decision:
        """This worker's verdict and Redis's (a round trip: for the rare answers given
        before admission, such as 413 and 415, which must not tell a right key either)."""
        if isinstance(self.limiter, RedisRateLimiter):
            return _as_auth(await self.limiter.peek_shared(_PREFIX + address))
        return self.blocked_here(address)


def _as_auth(decision: Decision) -> Decision:
    return decision if decision.allowed else decision._replace(refused_by="auth_failures")
