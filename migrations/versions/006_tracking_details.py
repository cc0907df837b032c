"""Tracking: params, tags, latest metrics, dataset inputs, logged models.

Revision ID: 006
Revises: 005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "006"
down_revision: str | None = "005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # History pages are keyset-ordered by (step, timestamp, id): widen 002's (run_id, key, step) index.
    op.drop_index(op.f("ix_run_metrics_run_id_key_step"), table_name="run_metrics")
    op.create_index(
        op.f("ix_run_metrics_run_id_key_step_timestamp_id"),
        "run_metrics",
        ["run_id", "key", "step", "timestamp", "id"],
        unique=False,
    )
    op.create_table(
        "datasets",
        sa.Column("experiment_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("digest", sa.String(length=36), nullable=False),
        sa.Column("source_type", sa.String(length=36), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("schema", sa.Text(), nullable=True),
        sa.Column("profile", sa.Text(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_datasets_experiment_id_experiments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        sa.UniqueConstraint("experiment_id", "name", "digest", name=op.f("uq_datasets_experiment_id_name_digest")),
    )
    op.create_table(
        "experiment_tags",
        sa.Column("experiment_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_experiment_tags_experiment_id_experiments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("experiment_id", "key", name=op.f("pk_experiment_tags")),
    )
    op.create_table(
        "logged_models",
        sa.Column("experiment_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("artifact_location", sa.Text(), nullable=False),
        sa.Column("model_type", sa.String(length=500), nullable=True),
        sa.Column("source_run_id", sa.Uuid(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("status_message", sa.Text(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_logged_models_experiment_id_experiments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["source_run_id"],
            ["experiment_runs.id"],
            name=op.f("fk_logged_models_source_run_id_experiment_runs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_logged_models")),
    )
    op.create_index(
        op.f("ix_logged_models_experiment_id_name"), "logged_models", ["experiment_id", "name"], unique=False
    )
    op.create_index(op.f("ix_logged_models_source_run_id"), "logged_models", ["source_run_id"], unique=False)
    op.create_table(
        "run_dataset_inputs",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("dataset_id", sa.Uuid(), nullable=False),
        sa.Column(
            "tags", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_run_dataset_inputs_dataset_id_datasets"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["experiment_runs.id"],
            name=op.f("fk_run_dataset_inputs_run_id_experiment_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "dataset_id", name=op.f("pk_run_dataset_inputs")),
    )
    op.create_index(op.f("ix_run_dataset_inputs_dataset_id"), "run_dataset_inputs", ["dataset_id"], unique=False)
    op.create_table(
        "run_latest_metrics",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("is_nan", sa.Boolean(), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["experiment_runs.id"],
            name=op.f("fk_run_latest_metrics_run_id_experiment_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "key", name=op.f("pk_run_latest_metrics")),
    )
    op.create_index(op.f("ix_run_latest_metrics_key_value"), "run_latest_metrics", ["key", "value"], unique=False)
    op.create_table(
        "run_params",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["experiment_runs.id"], name=op.f("fk_run_params_run_id_experiment_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "key", name=op.f("pk_run_params")),
    )
    op.create_index(op.f("ix_run_params_key_run_id"), "run_params", ["key", "run_id"], unique=False)
    op.create_table(
        "run_tags",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["experiment_runs.id"], name=op.f("fk_run_tags_run_id_experiment_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "key", name=op.f("pk_run_tags")),
    )
    op.create_index(op.f("ix_run_tags_key_run_id"), "run_tags", ["key", "run_id"], unique=False)
    op.create_table(
        "logged_model_metrics",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("model_id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=True),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("is_nan", sa.Boolean(), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("dataset_name", sa.String(length=500), nullable=True),
        sa.Column("dataset_digest", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["logged_models.id"],
            name=op.f("fk_logged_model_metrics_model_id_logged_models"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["experiment_runs.id"],
            name=op.f("fk_logged_model_metrics_run_id_experiment_runs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_logged_model_metrics")),
    )
    op.create_index(
        op.f("ix_logged_model_metrics_model_id_key"), "logged_model_metrics", ["model_id", "key"], unique=False
    )
    op.create_table(
        "logged_model_params",
        sa.Column("model_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["logged_models.id"],
            name=op.f("fk_logged_model_params_model_id_logged_models"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("model_id", "key", name=op.f("pk_logged_model_params")),
    )
    op.create_table(
        "logged_model_tags",
        sa.Column("model_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["logged_models.id"],
            name=op.f("fk_logged_model_tags_model_id_logged_models"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("model_id", "key", name=op.f("pk_logged_model_tags")),
    )
    op.create_table(
        "run_model_links",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("model_id", sa.Uuid(), nullable=False),
        sa.Column("direction", sa.String(length=10), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["logged_models.id"],
            name=op.f("fk_run_model_links_model_id_logged_models"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["experiment_runs.id"],
            name=op.f("fk_run_model_links_run_id_experiment_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "model_id", "direction", name=op.f("pk_run_model_links")),
    )
    op.create_index(op.f("ix_run_model_links_model_id"), "run_model_links", ["model_id"], unique=False)
    op.create_index(
        op.f("ix_experiment_runs_experiment_id_name"), "experiment_runs", ["experiment_id", "name"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_experiment_runs_experiment_id_name"), table_name="experiment_runs")
    op.drop_index(op.f("ix_run_model_links_model_id"), table_name="run_model_links")
    op.drop_table("run_model_links")
    op.drop_table("logged_model_tags")
    op.drop_table("logged_model_params")
    op.drop_index(op.f("ix_logged_model_metrics_model_id_key"), table_name="logged_model_metrics")
    op.drop_table("logged_model_metrics")
    op.drop_index(op.f("ix_run_tags_key_run_id"), table_name="run_tags")
    op.drop_table("run_tags")
    op.drop_index(op.f("ix_run_params_key_run_id"), table_name="run_params")
    op.drop_table("run_params")
    op.drop_index(op.f("ix_run_latest_metrics_key_value"), table_name="run_latest_metrics")
    op.drop_table("run_latest_metrics")
    op.drop_index(op.f("ix_run_dataset_inputs_dataset_id"), table_name="run_dataset_inputs")
    op.drop_table("run_dataset_inputs")
    op.drop_index(op.f("ix_logged_models_source_run_id"), table_name="logged_models")
    op.drop_index(op.f("ix_logged_models_experiment_id_name"), table_name="logged_models")
    op.drop_table("logged_models")
    op.drop_table("experiment_tags")
    op.drop_table("datasets")
    op.drop_index(op.f("ix_run_metrics_run_id_key_step_timestamp_id"), table_name="run_metrics")
    op.create_index(op.f("ix_run_metrics_run_id_key_step"), "run_metrics", ["run_id", "key", "step"], unique=False)
