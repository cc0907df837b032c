"""dead_letters (items a batch consumer quarantined); notification groups unique by their key's digest.

A group key renders user-supplied labels, so it can be longer than a btree index row may be (2704 bytes
on PostgreSQL): the unique constraint moves to a sha256 of the key, the key itself stays beside it.

Revision ID: 016
Revises: 015
"""

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "016"
down_revision: str | None = "015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("consumer", sa.String(length=100), nullable=False),
        sa.Column("item_id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("last_failed_at", TZ, nullable=False),
        sa.Column("replayed_at", TZ, nullable=True),
        sa.Column("resolved_at", TZ, nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_dead_letters_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
        sa.UniqueConstraint("consumer", "item_id", name=op.f("uq_dead_letters_consumer_item_id")),
    )
    op.create_index(
        op.f("ix_dead_letters_organization_id_created_at"), "dead_letters", ["organization_id", "created_at"]
    )
    op.create_index(op.f("ix_dead_letters_state"), "dead_letters", ["state"])

    op.add_column("notification_groups", sa.Column("group_key_digest", sa.String(length=64), nullable=True))
    groups = sa.table(
        "notification_groups",
        sa.column("id", sa.Uuid()),
        sa.column("group_key", sa.Text()),
        sa.column("group_key_digest", sa.String()),
    )
    bind = op.get_bind()
    for row in bind.execute(sa.select(groups.c.id, groups.c.group_key)).all():
        digest = hashlib.sha256(row.group_key.encode()).hexdigest()
        bind.execute(sa.update(groups).where(groups.c.id == row.id).values(group_key_digest=digest))
    with op.batch_alter_table("notification_groups") as batch:
        batch.alter_column("group_key_digest", existing_type=sa.String(length=64), nullable=False)
        batch.drop_constraint("uq_notification_groups_rule_id_group_key", type_="unique")
        batch.create_unique_constraint(
            op.f("uq_notification_groups_rule_id_group_key_digest"), ["rule_id", "group_key_digest"]
        )


def downgrade() -> None:
    with op.batch_alter_table("notification_groups") as batch:
        batch.drop_constraint("uq_notification_groups_rule_id_group_key_digest", type_="unique")
        batch.create_unique_constraint(op.f("uq_notification_groups_rule_id_group_key"), ["rule_id", "group_key"])
        batch.drop_column("group_key_digest")
    op.drop_index(op.f("ix_dead_letters_state"), table_name="dead_letters")
    op.drop_index(op.f("ix_dead_letters_organization_id_created_at"), table_name="dead_letters")
    op.drop_table("dead_letters")
