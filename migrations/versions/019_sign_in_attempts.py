"""sign_in_attempts: the sign-in rate limit shared by every process and host serving /login.

Revision ID: 019
Revises: 018
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "019"
down_revision: str | None = "018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sign_in_attempts",
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("window_ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_sign_in_attempts")),
    )
    op.create_index(op.f("ix_sign_in_attempts_window_ends_at"), "sign_in_attempts", ["window_ends_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_sign_in_attempts_window_ends_at"), table_name="sign_in_attempts")
    op.drop_table("sign_in_attempts")
