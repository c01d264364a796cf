"""Settings read from files: ``NAME_FILE=/path`` sets the setting ``NAME`` to that file's content.

The convention of container platforms (Podman and Docker secrets under ``/run/secrets``,
Kubernetes secret volumes, the database images' ``POSTGRES_PASSWORD_FILE``): a secret is
mounted as a file, so it never sits in the environment, where ``podman inspect``, ``ps e``
and crash reports show it. Works for every scalar setting under each name it is read from
(``CHURN_ID_HASH_SECRET_FILE``, ``DATABASE_URL_FILE``, ``CHURN_API_KEYS_FILE``...).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

FILE_SUFFIX = "_FILE"


def read_value_file(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The content of the file ``{name}_FILE`` names (one trailing newline dropped, as
    ``echo`` and editors leave one), or None if it is unset. Setting both ``name`` and
    ``{name}_FILE``, or naming a file that cannot be read, is a ValueError: neither may
    silently win."""
    environ = os.environ if environ is None else environ
    path = environ.get(name + FILE_SUFFIX)
    if path is None:
        return None
    if name in environ:
        raise ValueError(f"both {name} and {name}{FILE_SUFFIX} are set: set one")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"{name}{FILE_SUFFIX}: cannot read {path!r}: {error.strerror}") from None
    return text.removesuffix("\n").removesuffix("\r")


def environment_names(name: str, field: FieldInfo, prefix: str) -> Iterator[str]:
    """The environment variables a field is read from (its aliases, else prefix + name)."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        yield from (choice for choice in alias.choices if isinstance(choice, str))
    elif isinstance(alias, str):
        yield alias
    else:
        yield (prefix + name).upper()


class ValueFileSource(PydanticBaseSettingsSource):
    """A settings source for ``NAME_FILE`` variables, between the environment and the
    defaults."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None = None):
        super().__init__(settings_cls)
        self.environ = os.environ if environ is None else environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        prefix = str(self.config.get("env_prefix", ""))
        for env_name in environment_names(field_name, field, prefix):
            value = read_value_file(env_name, self.environ)
            if value is not None:
                key = env_name if field.validation_alias is not None else field_name
                return value, key, False
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, field_name)
            if value is not None:
                values[key] = value
        return values
