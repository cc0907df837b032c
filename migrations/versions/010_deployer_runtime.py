"""Deployer: model-server processes per deployment and role; deployments gain a shadow version.

Revision ID: 010
Revises: 009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "010"
down_revision: str | None = "009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("shadow_version_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("shadow_percent", sa.Integer(), server_default="0", nullable=False))
        batch.create_foreign_key(
            op.f("fk_deployments_shadow_version_id_model_versions"),
            "model_versions",
            ["shadow_version_id"],
            ["id"],
            ondelete="SET NULL",
        )
    op.create_table(
        "deployment_servers",
        sa.Column("deployment_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("model_version_id", sa.Uuid(), nullable=False),
        sa.Column("model_uri", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("log_path", sa.Text(), nullable=True),
        sa.Column("started_at", TZ, nullable=True),
        sa.Column("restarts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_deployment_servers_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_deployment_servers_model_version_id_model_versions"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_servers")),
        sa.UniqueConstraint("deployment_id", "role", name=op.f("uq_deployment_servers_deployment_id_role")),
    )
    op.create_index(
        op.f("ix_deployment_servers_model_version_id"), "deployment_servers", ["model_version_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_deployment_servers_model_version_id"), table_name="deployment_servers")
    op.drop_table("deployment_servers")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_constraint(op.f("fk_deployments_shadow_version_id_model_versions"), type_="foreignkey")
        batch.drop_column("shadow_percent")
        batch.drop_column("shadow_version_id")
