"""Deployer: model-server processes and traffic stats.

Revision ID: 010
Revises: 009
"""

from collections.abc import Sequence

revision: str = "010"
down_revision: str | None = "009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
