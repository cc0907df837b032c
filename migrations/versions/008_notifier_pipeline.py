"""Notifier: notifications, delivery attempts, groups and silences.

Revision ID: 008
Revises: 007
"""

from collections.abc import Sequence

revision: str = "008"
down_revision: str | None = "007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
