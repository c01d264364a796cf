"""The prediction log and the ground-truth table.

Revision ID: 0001
Revises:
Create Date: 2025-11-27

Types are spelled out here rather than imported from the models: a migration is a
record of what the schema was at this revision and must not change when the models do.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("customer_hash", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column(
            "features",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column("churn_probability", sa.Float(), nullable=False),
        sa.Column("will_churn", sa.Boolean(), nullable=False),
        sa.Column("risk_level", sa.String(8), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("cache", sa.String(8), nullable=False),
        sa.Column("endpoint", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_predictions"),
    )
    op.create_index("ix_predictions_request_id", "predictions", ["request_id"])
    op.create_index("ix_predictions_customer_hash", "predictions", ["customer_hash"])
    op.create_index("ix_predictions_created_at", "predictions", ["created_at"])

    op.create_table(
        "ground_truth",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("customer_hash", sa.String(64), nullable=False),
        sa.Column("churned", sa.Boolean(), nullable=False),
        sa.Column("observed_date", sa.Date(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ground_truth"),
        sa.UniqueConstraint(
            "customer_hash", "observed_date", name="uq_ground_truth_customer_hash_observed_date"
        ),
    )
    op.create_index("ix_ground_truth_customer_hash", "ground_truth", ["customer_hash"])


def downgrade() -> None:
    op.drop_index("ix_ground_truth_customer_hash", table_name="ground_truth")
    op.drop_table("ground_truth")
    op.drop_index("ix_predictions_created_at", table_name="predictions")
    op.drop_index("ix_predictions_customer_hash", table_name="predictions")
    op.drop_index("ix_predictions_request_id", table_name="predictions")
    op.drop_table("predictions")
