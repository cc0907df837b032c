"""Registry: stage transitions, aliases, the per-model version counter, logged-model lineage.

Model names become unique among live models only (a partial unique index), so a deleted model's name
can be registered again as MLflow allows.

Revision ID: 007
Revises: 006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "007"
down_revision: str | None = "006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LIVE = sa.text("deleted_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("last_version", sa.Integer(), server_default="0", nullable=False))
        batch.drop_constraint(op.f("uq_models_project_id_name"), type_="unique")
        batch.create_index(
            op.f("ix_models_project_id_name"),
            ["project_id", "name"],
            unique=True,
            postgresql_where=_LIVE,
            sqlite_where=_LIVE,
        )
    # Existing models continue numbering after their highest version.
    op.execute(
        "UPDATE models SET last_version = COALESCE("
        "(SELECT MAX(version) FROM model_versions WHERE model_versions.model_id = models.id), 0)"
    )

    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("logged_model_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("run_link", sa.Text(), nullable=True))
        batch.create_index(op.f("ix_model_versions_logged_model_id"), ["logged_model_id"], unique=False)
        batch.create_foreign_key(
            op.f("fk_model_versions_logged_model_id_logged_models"),
            "logged_models",
            ["logged_model_id"],
            ["id"],
            ondelete="SET NULL",
        )

    op.create_table(
        "model_version_transitions",
        sa.Column("model_version_id", sa.Uuid(), nullable=False),
        sa.Column("from_stage", sa.String(length=20), nullable=False),
        sa.Column("to_stage", sa.String(length=20), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["users.id"], name=op.f("fk_model_version_transitions_actor_id_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_model_version_transitions_model_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_version_transitions")),
    )
    op.create_index(
        op.f("ix_model_version_transitions_model_version_id_created_at"),
        "model_version_transitions",
        ["model_version_id", "created_at"],
        unique=False,
    )

    op.create_table(
        "model_aliases",
        sa.Column("model_id", sa.Uuid(), nullable=False),
        sa.Column("alias", sa.String(length=255), nullable=False),
        sa.Column("model_version_id", sa.Uuid(), nullable=False),
        sa.Column("updated_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_model_aliases_model_id_models"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_model_aliases_model_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["updated_by"], ["users.id"], name=op.f("fk_model_aliases_updated_by_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("model_id", "alias", name=op.f("pk_model_aliases")),
    )
    op.create_index(op.f("ix_model_aliases_model_version_id"), "model_aliases", ["model_version_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_model_aliases_model_version_id"), table_name="model_aliases")
    op.drop_table("model_aliases")
    op.drop_index(
        op.f("ix_model_version_transitions_model_version_id_created_at"), table_name="model_version_transitions"
    )
    op.drop_table("model_version_transitions")

    with op.batch_alter_table("model_versions") as batch:
        batch.drop_constraint(op.f("fk_model_versions_logged_model_id_logged_models"), type_="foreignkey")
        batch.drop_index(op.f("ix_model_versions_logged_model_id"))
        batch.drop_column("run_link")
        batch.drop_column("logged_model_id")

    # Fails if a deleted model and a live one share a name: purge the deleted one first.
    with op.batch_alter_table("models") as batch:
        batch.drop_index(op.f("ix_models_project_id_name"), postgresql_where=_LIVE, sqlite_where=_LIVE)
        batch.create_unique_constraint(op.f("uq_models_project_id_name"), ["project_id", "name"])
        batch.drop_column("last_version")
