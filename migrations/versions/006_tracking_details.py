"""Tracking: params, tags, latest metrics, dataset inputs, logged models.

Revision ID: 006
Revises: 005
"""

from collections.abc import Sequence

revision: str = "006"
down_revision: str | None = "005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
