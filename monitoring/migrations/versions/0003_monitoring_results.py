"""Results of the monitoring jobs: drift per column, performance per metric, retraining triggers.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _window_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "drift_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("column", sa.String(64), nullable=False),
        sa.Column("psi", sa.Float(), nullable=False),
        sa.Column("band", sa.String(16), nullable=False),
        sa.Column("reference_rows", sa.Integer(), nullable=False),
        sa.Column("current_rows", sa.Integer(), nullable=False),
        *_window_columns(),
        sa.PrimaryKeyConstraint("id", name="pk_drift_results"),
    )
    op.create_index("ix_drift_results_run_id", "drift_results", ["run_id"])
    op.create_index("ix_drift_results_created_at", "drift_results", ["created_at"])

    op.create_table(
        "performance_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("measured", sa.Float(), nullable=True),
        sa.Column("estimated", sa.Float(), nullable=True),
        sa.Column("label_count", sa.Integer(), nullable=False),
        sa.Column("prediction_count", sa.Integer(), nullable=False),
        *_window_columns(),
        sa.PrimaryKeyConstraint("id", name="pk_performance_results"),
    )
    op.create_index("ix_performance_results_run_id", "performance_results", ["run_id"])
    op.create_index("ix_performance_results_created_at", "performance_results", ["created_at"])

    op.create_table(
        "retraining_triggers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("features", _JSON, nullable=False),
        sa.Column("figures", _JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_retraining_triggers"),
    )
    op.create_index("ix_retraining_triggers_created_at", "retraining_triggers", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_retraining_triggers_created_at", table_name="retraining_triggers")
    op.drop_table("retraining_triggers")
    op.drop_index("ix_performance_results_created_at", table_name="performance_results")
    op.drop_index("ix_performance_results_run_id", table_name="performance_results")
    op.drop_table("performance_results")
    op.drop_index("ix_drift_results_created_at", table_name="drift_results")
    op.drop_index("ix_drift_results_run_id", table_name="drift_results")
    op.drop_table("drift_results")
