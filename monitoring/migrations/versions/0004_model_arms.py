"""Champion / challenger: each logged prediction names its arm and the other model's score.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as table:
        table.add_column(
            sa.Column("model_arm", sa.String(16), nullable=False, server_default="champion")
        )
        table.add_column(sa.Column("shadow_version", sa.String(64), nullable=True))
        table.add_column(sa.Column("shadow_probability", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("predictions") as table:
        table.drop_column("shadow_probability")
        table.drop_column("shadow_version")
        table.drop_column("model_arm")
