"""A metric point is stored once: unique (run, key, step, timestamp, value, is_nan), as MLflow's primary key.

The unique index replaces the history index (same leading columns, so history keeps its order). Points
stored twice before are reduced to one first; on SQLite, NaN points become 0 with is_nan set (NULLs are
never equal, so NaN duplicates would slip past the index). Logged-model points likewise: one row per
(model, key, step, timestamp, run).

Revision ID: 017
Revises: 016
"""

from collections.abc import Sequence

from alembic import op

revision: str = "017"
down_revision: str | None = "016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUN_POINT = ("run_id", "key", "step", "timestamp", "value", "is_nan")
MODEL_POINT = ("model_id", "key", "step", "timestamp", "run_id")


def _keep_one(table: str, columns: tuple[str, ...]) -> None:
    listed = ", ".join(f'"{column}"' for column in columns)
    op.execute(f"DELETE FROM {table} WHERE id NOT IN (SELECT min(id) FROM {table} GROUP BY {listed})")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("UPDATE run_metrics SET value = 0 WHERE is_nan AND value IS NULL")
    _keep_one("run_metrics", RUN_POINT)
    _keep_one("logged_model_metrics", MODEL_POINT)
    op.drop_index(op.f("ix_run_metrics_run_id_key_step_timestamp_id"), table_name="run_metrics")
    op.create_index(op.f("ix_run_metrics_run_id_key_step_timestamp_value_is_nan"), "run_metrics", list(RUN_POINT),
                    unique=True)  # fmt: skip
    op.drop_index(op.f("ix_logged_model_metrics_model_id_key"), table_name="logged_model_metrics")
    op.create_index(op.f("ix_logged_model_metrics_model_id_key_step_timestamp_run_id"), "logged_model_metrics",
                    list(MODEL_POINT), unique=True)  # fmt: skip


def downgrade() -> None:
    op.drop_index(op.f("ix_logged_model_metrics_model_id_key_step_timestamp_run_id"), table_name="logged_model_metrics")
    op.create_index(op.f("ix_logged_model_metrics_model_id_key"), "logged_model_metrics", ["model_id", "key"])
    op.drop_index(op.f("ix_run_metrics_run_id_key_step_timestamp_value_is_nan"), table_name="run_metrics")
    op.create_index(op.f("ix_run_metrics_run_id_key_step_timestamp_id"), "run_metrics",
                    ["run_id", "key", "step", "timestamp", "id"])  # fmt: skip
    if op.get_bind().dialect.name == "sqlite":
        op.execute("UPDATE run_metrics SET value = NULL WHERE is_nan")
