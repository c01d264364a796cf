"""Reading a request body at a bounded cost: size, time and shape limits.

A refused request must cost little whatever it holds. So the body is read within a time
limit (408) and a size limit (413), and, before any item is validated, one vectorised pass
over its bytes measures its JSON containers: a top-level array longer than the route allows,
or any nested object or array larger than a valid request can hold, is a 413 whose cost
depends only on the body's length (issue 13: 1.9 M integers took 31.8 s and 4.46 GB to
reject item by item).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

import numpy as np
from starlette.types import Receive

from core.schema import MAX_EXTRAS, CustomerData

MAX_NESTED_MEMBERS = max(MAX_EXTRAS, len(CustomerData.model_fields))
"""The most members any object or array below the top level may have: a customer has 28
fields, its `extra` object at most `MAX_EXTRAS`. Larger ones cannot be valid."""

_OPEN = np.zeros(256, dtype=np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_CLOSE = np.zeros(256, dtype=np.int8)
_CLOSE[[ord("]"), ord("}")]] = 1
_COMMA, _QUOTE, _BACKSLASH = ord(","), ord('"'), ord("\\")
_CONTAINER_START = re.compile(rb"\s*[\[{]")
_ARRAY_START = re.compile(rb"\s*\[")
_EMPTY = re.compile(rb"\s*[\[{]\s*[\]}]")
NESTED_LEVELS = 2
"""Levels below the top whose members validation visits one by one: a batch's customers
(or labels) and their `extra` objects. Deeper containers are single invalid values."""
_STRUCTURAL = (_OPEN | _CLOSE).astype(bool)
_STRUCTURAL[_COMMA] = True


class BodyTooLarge(Exception):
    """The request body exceeds the configured limit."""


class BodyTimeout(Exception):
    """The request body did not arrive within the configured time."""


async def read_body(declared: bytes | None, receive: Receive, limit: int, seconds: float) -> bytes:
    """The whole body, refusing (before reading it all) anything over `limit` bytes, the
    declared Content-Length included, and giving up after `seconds` in all: a client that
    never finishes its body holds the worker's attention for no longer."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    break
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge
                chunks.append(chunk)
                if not message.get("more_body"):
                    break
    except TimeoutError:
        raise BodyTimeout from None
    return b"".join(chunks)


SCAN_FROM_BYTES = 16_384
"""A single object shorter than this is not measured (it would cost more than it saves on
the hot path): whatever it holds, validating it costs at most a few milliseconds."""


THREAD_FROM_BYTES = 262_144
"""Bodies at least this long are measured in a thread (numpy releases the GIL), so the
event loop keeps serving the worker's other requests meanwhile."""


async def shape_refusal(body: bytes, items: str, item_limit: int | None) -> str | None:
    """`shape_problem`, off the event loop for long bodies."""
    if len(body) < THREAD_FROM_BYTES:
        return shape_problem(body, items, item_limit)
    return await asyncio.to_thread(shape_problem, body, items, item_limit)


def shape_problem(body: bytes, items: str, item_limit: int | None) -> str | None:
    """Why `body` is refused before validation (413), or None. `items` names the members
    of a top-level array and `item_limit` caps them (None: the route takes one object)."""
    if item_limit is None and len(body) < SCAN_FROM_BYTES:
        return None
    if item_limit is not None and (inner := _enveloped(body, items)) is not None:
        body = inner  # `{"customers": [...]}` (BentoML's clients): its array is the items
    top_limit = item_limit if item_limit is not None and _ARRAY_START.match(body) else None
    shape = measure(body, top_limit if top_limit is not None else MAX_NESTED_MEMBERS)
    if top_limit is not None and shape.top_items is not None and shape.top_items > top_limit:
        return f"{items}: at most {top_limit} per request, got {shape.top_items}"
    if top_limit is None and (shape.top_items or 0) > MAX_NESTED_MEMBERS:
        return f"body: an object has {shape.top_items} members, at most {MAX_NESTED_MEMBERS}"
    if shape.largest_nested > MAX_NESTED_MEMBERS:
        return (
            f"body: a nested object or array has {shape.largest_nested} members, "
            f"at most {MAX_NESTED_MEMBERS}"
        )
    return None


def _enveloped(body: bytes, items: str) -> bytes | None:
    """The array of a body that is exactly `{"<items>": [...]}`, else None."""
    start = re.match(rb'\s*\{\s*"' + re.escape(items.encode()) + rb'"\s*:\s*(?=\[)', body)
    if start is None:
        return None
    inner = body.rstrip()  # a trailing "]" then "}": checked from the end, not searched for
    if not inner.endswith(b"}"):
        return None
    inner = inner[start.end() : -1].rstrip()
    return inner if inner.endswith(b"]") else None


@dataclass(frozen=True)
class Shape:
    """The sizes of a JSON document's containers, measured without parsing it."""

    top_items: int | None
    """Members of the top-level array or object (None: the top level is not a container)."""
    largest_nested: int
    """Members of the largest object or array at the levels validation iterates over."""


def measure(body: bytes, top_limit: int | None = None) -> Shape:
    """Count container members with numpy over the bytes; nested ones only if the top
    level is within `top_limit`. Malformed JSON gets some count (the parser refuses it
    later), so the count only has to be cheap, and exact for valid JSON."""
    if not _CONTAINER_START.match(body):
        return Shape(None, 0)
    codes = np.frombuffer(body, dtype=np.uint8)
    tokens = codes[_STRUCTURAL[codes] & ~_in_string(codes)]
    opens = _OPEN[tokens].astype(np.int32)
    depth = np.cumsum(opens - _CLOSE[tokens], dtype=np.int32)  # inside an opener, at a comma
    commas = tokens == _COMMA
    top = 0 if _EMPTY.match(body) else int(np.count_nonzero(commas & (depth == 1))) + 1
    if top_limit is not None and top > top_limit:
        return Shape(top, 0)
    deep = depth >= 2
    depth, opens, commas = depth[deep], opens[deep], commas[deep]
    largest = 0
    for level in range(2, NESTED_LEVELS + 2):
        # A comma belongs to the latest opener at its own depth: number those openers.
        here = depth == level
        container = np.cumsum((opens == 1) & here)
        owners = container[commas & here]
        if len(owners):
            largest = max(largest, int(np.bincount(owners).max()) + 1)
    return Shape(top, largest)


def _in_string(codes: np.ndarray) -> np.ndarray:
    """True for each byte inside a JSON string (brackets and commas there are text).
    A quote counts unless an odd run of backslashes precedes it."""
    quotes = codes == _QUOTE
    if not quotes.any():
        return quotes
    backslashes = codes == _BACKSLASH
    if backslashes.any():
        index = np.arange(len(codes), dtype=np.int32)
        last_other = np.maximum.accumulate(np.where(backslashes, -1, index))
        run = np.zeros(len(codes), dtype=np.int32)
        run[1:] = index[:-1] - last_other[:-1]  # backslashes just before each byte
        quotes &= run % 2 == 0
    return (np.cumsum(quotes, dtype=np.int32) & 1).astype(bool)
