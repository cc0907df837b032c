"""rollout_counters: the gateway's shared rollout state (traffic and shadow counters) without Redis.

Revision ID: 018
Revises: 017
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "018"
down_revision: str | None = "017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rollout_counters",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("field", sa.String(length=40), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", "field", name=op.f("pk_rollout_counters")),
    )
    op.create_index(op.f("ix_rollout_counters_expires_at"), "rollout_counters", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_rollout_counters_expires_at"), table_name="rollout_counters")
    op.drop_table("rollout_counters")
