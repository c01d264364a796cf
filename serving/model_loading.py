"""Finding and loading the served model without ever taking the process down.

Whatever is wrong with the store (empty, an unreadable ``model.yaml``, files that fail
their checksums, a booster XGBoost cannot parse), the service starts, stays alive and says
why it cannot score: `/health` unhealthy with the reason, `/readyz` 503, scoring 503. The
reason any caller sees names the exception and the file, never an absolute path or a
stack trace; the full error goes to the server log.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bentoml

from core.pipeline.integrity import ModelIntegrityError
from core.pipeline.store import stored_predictor
from core.settings import MODEL_NAME
from serving.scoring import LoadedModel

logger = logging.getLogger("churn.model")

MAX_REASON_CHARS = 300
_STACK_TRACE = re.compile(r"\bStack trace:.*", re.DOTALL)
_LOG_PREFIX = re.compile(r"\[\d{2}:\d{2}:\d{2}\] \S+?:\d+: ")
"""dmlc/XGBoost's `[hh:mm:ss] /source/file.cc:123: ` before the message."""
_ABSOLUTE_PATH = re.compile(r"""(?<![\w.~-])(?:[A-Za-z]:)?[/\\][^\s"'`,;()\[\]<>]*""")


def public_reason(exc: BaseException) -> str:
    """`Type: message` for callers: one line, no stack trace, each absolute path cut to
    its file name (say what is wrong, not where the files are)."""
    message = _LOG_PREFIX.sub("", _STACK_TRACE.sub("", str(exc)))
    if isinstance(exc, BaseExceptionGroup):  # cattrs: one sub-exception per bad field
        message += ": " + "; ".join(public_reason(inner) for inner in exc.exceptions)
    message = _ABSOLUTE_PATH.sub(lambda m: re.split(r"[/\\]", m.group().rstrip("/\\"))[-1], message)
    message = " ".join(message.split())
    if len(message) > MAX_REASON_CHARS:
        message = message[: MAX_REASON_CHARS - 1] + "…"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def find_model(name: str = MODEL_NAME) -> tuple[bentoml.models.BentoModel | None, str | None]:
    """The reference to `name:latest` if the store has a readable one, else None and why.

    BentoML parses the model's ``model.yaml`` here, at class definition (import) time: a
    broken one must not stop the import, or the process exits instead of starting unhealthy.
    """
    reference = bentoml.models.BentoModel(f"{name}:latest")
    try:
        stored = reference.stored
    except Exception as exc:
        logger.error("'%s:latest': its model.yaml cannot be read", name, exc_info=True)
        return None, (
            f"no usable model '{name}' in the BentoML store: its model.yaml cannot be read "
            f"({public_reason(exc)}); restore the model or run `churn train`"
        )
    if stored is None:
        return None, None
    return reference, None


def load_model(
    reference: Callable[[], Any], problem: str | None, name: str = MODEL_NAME
) -> tuple[LoadedModel | None, str | None]:
    """The model to serve (files verified against their checksums, warmed up), or None and
    the caller-safe reason. `reference` yields the service's model reference (BentoML
    resolves it on access, which can fail too); `problem` is `find_model`'s."""
    if problem is not None:
        return None, problem
    tag: Any = f"{name}:latest"
    try:
        ref = reference()
        if ref is None:  # a replica whose models all come from the registry starts so
            logger.info("the BentoML store has no model '%s'", name)
            return None, (
                f"no usable model '{name}' in the BentoML store (LookupError: the store is "
                "empty); run `churn train` first, or promote one in the registry"
            )
        stored = ref.resolve() if isinstance(ref, bentoml.models.BentoModel) else ref
        tag = stored.tag
        loaded = stored_predictor(Path(stored.path), str(tag.version))
        loaded.predictor.warm_up()
    except ModelIntegrityError as exc:
        logger.error("refusing the stored model: %s", exc)
        return None, f"model '{tag}' refused: {exc}; restore its files or run `churn train`"
    except Exception as exc:  # the process must stay up and say why it cannot score
        logger.error("no usable model '%s'", name, exc_info=True)
        return None, (
            f"no usable model '{name}' in the BentoML store ({public_reason(exc)}); "
            "run `churn train` first"
        )
    logger.info("loaded %s (content checksum %s)", tag, loaded.checksum)
    return LoadedModel(loaded.predictor, loaded.version, loaded.checksum), None
