"""Every worker follows the registry: the model swap without a restart.

BentoML cannot reload a model in a running service, and one HTTP call reaches one worker
only, so each worker watches the registry itself. A thread reads the assignment
(`ModelRegistry.assignment()`, one cheap call) every `CHURN_REGISTRY_POLL_S`; when it
changed, the worker fetches the assigned models' files into its replica's store (checked
against their checksums), loads them, checks them (serving/model_checks.py: feature
contract, golden predictions, latency), warms them, and only then swaps its served set
(serving/served_models.py) in one reference assignment: a batch in flight finishes on the
old set, the next one is scored by the new. A model that fails a check is refused — with
the reason in the server log, the registry's audit trail and `churn_model_refusals_total`
— and the worker keeps serving what it serves; it is not tried again until the
assignment changes.

So every worker of every replica serves a promotion within `CHURN_REGISTRY_POLL_S` plus
the new model's fetch, load and checks (about 1–3 s for the default model here).

The watcher also applies the error-rate rule: when more than `CHURN_ROLLBACK_ERROR_RATE`
of the champion's last `CHURN_ROLLBACK_MIN_ANSWERS` answers in this worker failed to score
(those customers were answered by the previous champion, kept loaded as the fallback), it
rolls the registry back; a failing challenger is withdrawn the same way.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.pipeline.integrity import ModelIntegrityError
from core.pipeline.store import stored_predictor
from core.registry import Assignment, ModelRegistry, RegistryError
from core.settings import Settings
from serving.model_checks import Refusal, refusal
from serving.model_events import count_refusal, count_swap
from serving.model_loading import public_reason
from serving.scoring import LoadedModel
from serving.served_models import ErrorWindow, ServedModels

logger = logging.getLogger("churn.watcher")


def worker_name() -> str:
    """Who a worker is in logs and audit entries: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Wanted:
    """The part of an assignment a worker serves."""

    champion: str | None
    challenger: str | None
    share: float

    @classmethod
    def of(cls, assignment: Assignment) -> Wanted:
        return cls(assignment.champion, assignment.challenger, assignment.challenger_share)


class ModelWatcher:
    """Keeps one worker's served set on the registry's assignment."""

    def __init__(
        self,
        registry: ModelRegistry,
        current: Callable[[], ServedModels | None],
        serve: Callable[[ServedModels], None],
        settings: Settings,
        errors: ErrorWindow,
        store: Any = None,
    ) -> None:
        """`store`: the BentoML model store models are fetched into (the process's, i.e.
        this replica's, when None)."""
        self._registry = registry
        self._store = store
        self._current = current
        self._serve = serve
        self._settings = settings
        self._errors = errors
        self._wanted: Wanted | None = None
        self._refused: dict[str, Refusal] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._registry_down = False
        self.worker = worker_name()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="churn-model-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._settings.registry_poll_s):
            try:
                self.poll()
            except Exception:  # the watcher must outlive any one bad poll
                logger.exception("worker %s: watching the registry failed", self.worker)

    def poll(self) -> None:
        """One look at the registry: act on error rates, then follow the assignment."""
        try:
            assignment = self._registry.assignment()
        except Exception as exc:
            if not self._registry_down:
                logger.warning(
                    "worker %s: the registry cannot be read (%s); keeps serving what it serves",
                    self.worker,
                    public_reason(exc),
                )
            self._registry_down = True
            return
        self._registry_down = False
        if self._act_on_errors(assignment):
            assignment = self._registry.assignment()
        wanted = Wanted.of(assignment)
        if wanted == self._wanted or wanted.champion is None:
            return
        self._wanted = wanted
        self._follow(wanted)

    # Following the assignment.

    def _follow(self, wanted: Wanted) -> None:
        served = self._current()
        champion = (
            self._model(wanted.champion, "champion", served, None) if wanted.champion else None
        )
        if champion is None:
            if served is None or served.champion_registered is None:
                return  # nothing of the registry's can serve: keep the store's model
            champion = served.champion
            wanted_champion: str = served.champion_registered
        else:
            wanted_champion = str(wanted.champion)
        challenger = None
        if wanted.challenger is not None:
            challenger = self._model(wanted.challenger, "challenger", served, champion)
        new = ServedModels(
            champion=champion,
            challenger=challenger,
            share=wanted.share if challenger is not None else 0.0,
            fallback=_fallback(served, champion),
            champion_registered=wanted_champion,
            challenger_registered=wanted.challenger if challenger is not None else None,
        )
        if served is not None and _same(served, new):
            return
        self._serve(new)
        if served is None or served.champion is not champion:
            count_swap("champion")
        if challenger is not None and (served is None or served.challenger is not challenger):
            count_swap("challenger")
        logger.info(
            "worker %s now serves %s (was: %s)",
            self.worker,
            new.describe(),
            served.describe() if served else "nothing",
        )

    def _model(
        self,
        version: str,
        role: str,
        served: ServedModels | None,
        champion: LoadedModel | None,
    ) -> LoadedModel | None:
        """The loaded, checked model of registry `version`; None if it is refused."""
        reuse = _already_loaded(served, version, self._registry)
        if reuse is not None:
            return reuse
        if version in self._refused:
            return None
        serving = champion or (served.champion if served else None)
        found = self._load(version, serving)
        if isinstance(found, Refusal):
            self._refuse(version, role, found, served)
            return None
        return found

    def _load(self, version: str, serving: LoadedModel | None) -> LoadedModel | Refusal:
        tag = self._registry.bentoml_tag(version)
        try:
            folder = self._registry.fetch(version, self._store)
            stored = stored_predictor(folder, tag.split(":", 1)[1])
        except ModelIntegrityError as exc:
            return Refusal("checksum", str(exc))
        except Exception as exc:
            logger.error(
                "worker %s: loading version %s failed", self.worker, version, exc_info=True
            )
            return Refusal("load", public_reason(exc))
        problem = refusal(stored, serving.predictor if serving else None, self._settings)
        if problem is not None:
            return problem
        return LoadedModel(stored.predictor, stored.version, stored.checksum)

    def _refuse(self, version: str, role: str, why: Refusal, served: ServedModels | None) -> None:
        self._refused[version] = why
        count_refusal(why.check)
        keeps = served.describe() if served else "nothing"
        logger.error(
            "worker %s refuses registry version %s as %s: %s check failed: %s; keeps serving %s",
            self.worker,
            version,
            role,
            why.check,
            why.reason,
            keeps,
        )
        try:
            self._registry.record(
                version,
                "refused",
                f"service:{self.worker}",
                f"{why.check} check failed: {why.reason}",
                {"role": role, "check": why.check},
            )
        except Exception:
            logger.warning(
                "worker %s: the refusal could not be recorded", self.worker, exc_info=True
            )

    # The error-rate rule.

    def _act_on_errors(self, assignment: Assignment) -> bool:
        """Roll back a champion (withdraw a challenger) failing too often here; True if
        the registry was changed."""
        served = self._current()
        if served is None:
            return False
        limit, enough = self._settings.rollback_error_rate, self._settings.rollback_min_answers
        checks = [
            ("champion", served.champion, served.champion_registered, assignment.champion),
            ("challenger", served.challenger, served.challenger_registered, assignment.challenger),
        ]
        for role, model, registered, assigned in checks:
            if model is None or registered is None or registered != assigned:
                continue
            rate, judged = self._errors.rate(model.version)
            if judged < enough or rate <= limit:
                continue
            reason = (
                f"error rate {rate:.1%} over its last {judged} answers in worker {self.worker} "
                f"is above CHURN_ROLLBACK_ERROR_RATE = {limit:.0%}"
            )
            figures = {"error_rate": rate, "answers": judged, "limit": limit}
            actor = f"service:{self.worker}"
            try:
                if role == "champion":
                    self._registry.rollback(actor, reason, figures)
                else:
                    self._registry.clear_challenger(actor, reason, figures)
            except RegistryError as exc:
                logger.error(
                    "worker %s: %s %s: %s; cannot act: %s",
                    self.worker,
                    role,
                    registered,
                    reason,
                    exc,
                )
                continue
            logger.error("worker %s: %s %s withdrawn: %s", self.worker, role, registered, reason)
            self._errors.forget(model.version)
            return True
        return False


def _already_loaded(
    served: ServedModels | None, version: str, registry: ModelRegistry
) -> LoadedModel | None:
    """A model this worker holds already under registry `version` (no second load)."""
    if served is None:
        return None
    if served.champion_registered == version:
        return served.champion
    if served.challenger_registered == version and served.challenger is not None:
        return served.challenger
    tag_version = registry.bentoml_tag(version).split(":", 1)[1]
    for model in (served.champion, served.challenger, served.fallback):
        if model is not None and model.version == tag_version:
            return model
    return None


def _fallback(served: ServedModels | None, champion: LoadedModel) -> LoadedModel | None:
    """The champion before this swap answers if the new one fails; kept across later swaps."""
    if served is None:
        return None
    if served.champion is not champion:
        return served.champion
    return served.fallback


def _same(a: ServedModels, b: ServedModels) -> bool:
    return (
        a.champion is b.champion
        and a.challenger is b.challenger
        and a.share == b.share
        and a.champion_registered == b.champion_registered
        and a.challenger_registered == b.challenger_registered
    )


def follow_registry(
    current: Callable[[], ServedModels | None],
    serve: Callable[[ServedModels], None],
    settings: Settings,
    errors: ErrorWindow,
) -> ModelWatcher | None:
    """With `CHURN_MODEL_SOURCE=registry`: serve the registry's assignment now (before the
    first request) and follow it from then on; None with `store`."""
    if settings.model_source != "registry":
        return None
    watcher = ModelWatcher(ModelRegistry(), current, serve, settings, errors)
    watcher.poll()
    watcher.start()
    return watcher
