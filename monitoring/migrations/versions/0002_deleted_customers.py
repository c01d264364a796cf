"""Tombstones of deleted customers: late rows of theirs are dropped on arrival.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deleted_customers",
        sa.Column("customer_hash", sa.String(64), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("customer_hash", name="pk_deleted_customers"),
    )
    op.create_index("ix_deleted_customers_deleted_at", "deleted_customers", ["deleted_at"])


def downgrade() -> None:
    op.drop_index("ix_deleted_customers_deleted_at", table_name="deleted_customers")
    op.drop_table("deleted_customers")
