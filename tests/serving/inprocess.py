"""The service in this process: BentoML's ASGI app under Starlette's TestClient, no
`bentoml serve`. Entering the client runs the app's lifespan as a worker's start does (the
service instance built from the settings, its model found, verified and loaded, the
prediction log started); closing it runs the shutdown hook (the log flushed).

What only a real server shows (several workers, signals, `/metrics`, batching under
concurrency) stays on the subprocess fixtures of conftest.py; everything the request path
decides from one request (statuses, bodies, headers, log rows) is tested here, about 0.4 s
per configuration instead of a server start.

Two BentoML facts shape this module:

- the service instance is a process-wide global (`bentoml.get_current_service`, which the
  front door and the FastAPI routes read), so one app at a time is open: opening another
  closes the previous one, and a handle used after that raises;
- BentoML's metrics middleware registers its Prometheus series once per process, so every
  app here is the same ASGI object (`ChurnService.to_asgi()`, built once), started again
  with other settings: a new instance per start, as a new worker would build.
"""

from __future__ import annotations

import gc
import os
import secrets
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
from prometheus_client import REGISTRY
from starlette.testclient import TestClient

from core.settings import get_settings

BASE_URL = "http://testserver"


def metric(name: str, **labels: str) -> float:
    """A sample of this process's Prometheus registry, where the in-process app counts
    (`GET /metrics` itself answers only under the real server)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


@contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """`env` in os.environ (and a fresh `get_settings()`) for the block only."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    get_settings.cache_clear()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()


@contextmanager
def model_store(home: Path) -> Iterator[None]:
    """BentoML's model store at `home` for the block. BentoML reads BENTOML_HOME once per
    process, so the store is swapped in its container (a private name: an upgrade that
    moves it fails here, loudly)."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    with BentoMLContainer.model_store.patch(ModelStore(str(home / "models"))):
        yield


@dataclass
class RawAnswer:
    """An answer to a request sent chunk by chunk (`InProcessApp.send_slowly`)."""

    status: int
    headers: httpx.Headers
    body: bytes
    seconds: float


class InProcessApp:
    """One started service instance and the client that reaches it."""

    def __init__(self, client: TestClient, env: dict[str, str], folder: Path) -> None:
        self.client = client
        self.env = env
        """The settings' environment this instance was started with (defaults included)."""
        self.folder = folder
        """This instance's own folder: its SQLite log, spool and data directory."""
        self.closed = False

    @property
    def database_url(self) -> str:
        return self.env["DATABASE_URL"]

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self.closed:
            raise RuntimeError(
                "this in-process app was closed (another was opened: BentoML keeps one "
                "service instance per process); ask for the app again"
            )
        return self.client.request(method, path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)

    def send_slowly(
        self,
        method: str,
        path: str,
        chunks: Sequence[tuple[float, bytes]],
        headers: Mapping[str, str],
        hang: bool = False,
    ) -> RawAnswer:
        """A request whose body arrives as `chunks` (seconds to wait, bytes), then ends or,
        with `hang`, never does: what TestClient cannot send (it reads a body whole). Sent
        through httpx's ASGI transport on the client's own event loop, where the instance
        lives."""
        if self.closed:
            raise RuntimeError("this in-process app was closed")
        assert self.client.portal is not None, "the app's lifespan is not running"

        async def body() -> AsyncIterator[bytes]:
            for delay, chunk in chunks:
                await anyio.sleep(delay)
                yield chunk
            if hang:
                await anyio.sleep_forever()

        async def send() -> RawAnswer:
            transport = httpx.ASGITransport(app=self.client.app, client=("127.0.0.1", 50000))
            async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
                started = anyio.current_time()
                answer = await client.request(method, path, content=body(), headers=headers)
                return RawAnswer(
                    answer.status_code,
                    answer.headers,
                    answer.content,
                    anyio.current_time() - started,
                )

        return self.client.portal.call(send)


class InProcessApps:
    """Opens the service in this process, one configuration at a time (see the module)."""

    _asgi: Any = None
    """The one ASGI app of the process, shared by every `InProcessApps` (BentoML's metrics
    register once per process)."""

    def __init__(self, folder: Path, home: Path) -> None:
        self.folder = folder
        self.home = home
        """The session's BentoML home (the `trained` model's store)."""
        self.current: InProcessApp | None = None
        self._key: tuple[Any, ...] | None = None

    def get(
        self, env: Mapping[str, str] | None = None, home: Path | None = None, fresh: bool = False
    ) -> InProcessApp:
        """The service started with the settings `env` over the model store at `home`
        (default: the session's): the open one if it has that configuration (and `fresh`
        is not asked), else a new instance, in a folder of its own (SQLite log, spool, data
        directory, unless `env` names others)."""
        env = dict(env or {})
        home = home or self.home
        key = (tuple(sorted(env.items())), str(home))
        if self.current is not None and self._key == key and not fresh:
            return self.current
        self.close()
        folder = self.folder / f"app-{secrets.token_hex(4)}"
        folder.mkdir(parents=True)
        settings = {
            "DATABASE_URL": f"sqlite:///{folder / 'predictions.db'}",
            "CHURN_SPOOL_DIR": str(folder / "spool"),
            "CHURN_DATA_DIR": str(folder),
            **env,
        }
        self.current = self._start(settings, home, folder)
        self._key = key
        return self.current

    def _start(self, env: dict[str, str], home: Path, folder: Path) -> InProcessApp:
        # Imported here, not at collection: the class resolves its model at import.
        from service import ChurnService
        from serving.model_loading import find_model

        if InProcessApps._asgi is None:
            InProcessApps._asgi = ChurnService.to_asgi()  # type: ignore[attr-defined]
        service = ChurnService.inner  # type: ignore[attr-defined]
        imported = (service.model_ref, service.model_problem)
        client = TestClient(self._asgi, base_url=BASE_URL, client=("127.0.0.1", 50000))
        # The settings and the store are in force while the instance is built: it reads
        # both then (service.py's __init__), and its settings object afterwards.
        with environment(env), model_store(home):
            try:
                # What the class computes at import, computed again over this store, as a
                # worker that imports service.py there would.
                service.model_ref, service.model_problem = find_model()
                client.__enter__()
            finally:
                service.model_ref, service.model_problem = imported
        return InProcessApp(client, env, folder)

    def close(self) -> None:
        """Shut the open instance down (its log flushed); errors of its shutdown raise."""
        current, self.current, self._key = self.current, None, None
        if current is None:
            return
        current.closed = True
        try:
            current.client.__exit__(None, None, None)
        finally:
            # The instance froze everything it loaded out of the collector's sight (it
            # lives for a worker's life); a closed one must not stay frozen in the tests.
            gc.unfreeze()
