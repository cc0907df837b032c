"""notifier_periodic_runs.checkpoint: where the sweep's search for lost events starts.

Without it, every sweep (every 5 s) looked at a whole day of published events for ones the notifier
never handled; at a sustained event rate that scan outgrows the interval. The sweep now starts at the
oldest event it has not yet seen handled.

Revision ID: 012
Revises: 011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "012"
down_revision: str | None = "011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("notifier_periodic_runs", sa.Column("checkpoint", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notifier_periodic_runs") as batch:
        batch.drop_column("checkpoint")
