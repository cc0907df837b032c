"""Deployments run N replicas of each model server: `deployments.replicas`, `deployment_servers.replica`.

Revision ID: 020
Revises: 019
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "020"
down_revision: str | None = "019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("replicas", sa.Integer(), server_default="1", nullable=False))
    with op.batch_alter_table("deployment_servers") as batch:
        batch.add_column(sa.Column("replica", sa.Integer(), server_default="0", nullable=False))
        batch.drop_constraint(op.f("uq_deployment_servers_deployment_id_role"), type_="unique")
        batch.create_unique_constraint(
            op.f("uq_deployment_servers_deployment_id_role_replica"), ["deployment_id", "role", "replica"]
        )


def downgrade() -> None:
    # Only replica 0 of each role fits the one-server-per-role schema.
    op.execute("DELETE FROM deployment_servers WHERE replica > 0")
    with op.batch_alter_table("deployment_servers") as batch:
        batch.drop_constraint(op.f("uq_deployment_servers_deployment_id_role_replica"), type_="unique")
        batch.create_unique_constraint(op.f("uq_deployment_servers_deployment_id_role"), ["deployment_id", "role"])
        batch.drop_column("replica")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("replicas")
