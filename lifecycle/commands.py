"""`churn registry`: the model registry's roles and history, and the changes made by hand.

Thin over `core.registry.ModelRegistry`; every worker of the service follows what the
registry says (serving/model_watcher.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

registry_app = typer.Typer(
    help="The model registry: which version is champion, challenger, previous champion.",
    no_args_is_help=True,
)

ROLES = ("champion", "challenger", "previous_champion")


def _actor() -> str:
    """Who made a change by hand, for the audit trail."""
    return f"cli:{os.environ.get('USER') or os.environ.get('LOGNAME') or 'unknown'}"


@contextmanager
def refused_exits(code: int = 1) -> Iterator[None]:
    """A change the registry refuses (unknown version, no previous champion, an empty
    reason) ends the command with `refused: <why>` on stderr and exit `code`."""
    from core.registry import RegistryError

    try:
        yield
    except (RegistryError, ValueError) as error:
        typer.echo(f"refused: {error}", err=True)
        raise typer.Exit(code) from error


@registry_app.command()
def show(
    audit: Annotated[int, typer.Option(help="How many of the latest changes to list.")] = 10,
) -> None:
    """Each role's version, BentoML tag and training figures, then the latest changes."""
    from rich.console import Console
    from rich.table import Table

    from core.registry import ModelRegistry

    registry = ModelRegistry()
    assignment = registry.assignment()
    console = Console(width=120)
    roles = Table(title=f"registered model {registry.name}")
    for column in ("role", "version", "BentoML tag", "training figures"):
        roles.add_column(column)
    for role in ROLES:
        version = getattr(assignment, role)
        figures = registry.training_figures(version) if version else {}
        shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(figures.items()))
        tag = getattr(assignment, f"{role}_tag")
        roles.add_row(role, version or "—", tag or "—", shown or "—")
    console.print(roles)
    if assignment.challenger:
        console.print(f"challenger share: {assignment.challenger_share:.0%} of customers")
    history = Table(title="latest changes, newest first")
    for column in ("at (UTC)", "action", "version", "actor", "reason", "figures"):
        history.add_column(column)
    for entry in registry.audit_trail()[:audit]:
        history.add_row(
            f"{entry.at:%Y-%m-%d %H:%M:%S}",
            entry.action,
            entry.version,
            entry.actor,
            entry.reason,
            json.dumps(entry.figures, sort_keys=True) if entry.figures else "",
        )
    console.print(history)


@registry_app.command()
def register(
    tag: Annotated[str, typer.Argument(help="A stored model: churn_model:<version>.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")],
) -> None:
    """Register a stored model as a new version (it takes no role: nothing serves it yet)."""
    from bentoml.exceptions import NotFound

    from core.registry import ModelRegistry

    try:
        version = ModelRegistry().register(tag, _actor(), reason)
    except NotFound as error:
        raise typer.BadParameter(f"no stored model {tag}", param_hint="TAG") from error
    except ValueError as error:  # no reason given, or a model failing its checksums
        raise typer.BadParameter(str(error)) from error
    typer.echo(f"registered {tag} as version {version}")


@registry_app.command()
def rollback(reason: Annotated[str, typer.Option(help="Why, for the audit trail.")]) -> None:
    """The previous champion becomes champion again; recorded in the audit trail."""
    from core.registry import ModelRegistry

    with refused_exits():
        assignment = ModelRegistry().rollback(_actor(), reason)
    typer.echo(f"champion is version {assignment.champion} ({assignment.champion_tag})")


@registry_app.command()
def champion(
    version: Annotated[str, typer.Argument(help="A registered version.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")],
) -> None:
    """Make a version the champion by hand (the old one becomes previous champion)."""
    from core.registry import ModelRegistry

    with refused_exits():
        assignment = ModelRegistry().set_champion(version, _actor(), reason)
    typer.echo(f"champion is version {assignment.champion} ({assignment.champion_tag})")


@registry_app.command()
def challenger(
    version: Annotated[str, typer.Argument(help="A registered version.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")],
    share: Annotated[
        float | None, typer.Option(min=0, max=1, help="Share of customers (default 0.1).")
    ] = None,
) -> None:
    """Give a version a sticky share of customers, beside the champion."""
    from core.registry import ModelRegistry

    with refused_exits():
        assignment = ModelRegistry().set_challenger(version, _actor(), reason, share=share)
    typer.echo(
        f"challenger is version {assignment.challenger} ({assignment.challenger_tag}) "
        f"for {assignment.challenger_share:.0%} of customers"
    )


def register_trained(tag: str, actor: str = "churn train") -> str:
    """Register a freshly trained model; the first one of a registry becomes champion
    (Day 0), any later one serves nothing until promoted. Returns what was done."""
    from core.registry import ModelRegistry

    registry = ModelRegistry()
    version = registry.register(tag, actor, "trained by `churn train`")
    if registry.assignment().champion is None:
        registry.set_champion(version, actor, "first model of the registry: no champion yet")
        return f"registered {tag} as version {version}: champion (the registry had none)"
    return (
        f"registered {tag} as version {version}: it serves nothing until promoted "
        f"(`churn registry challenger {version} --reason ...`, or `churn retrain`)"
    )
