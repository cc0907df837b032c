"""run_latest_metrics: the run's experiment, kept by a trigger, and an (experiment_id, key, value) index.

A search that filters and sorts on a metric (`metrics.acc > 0.9 ... ORDER BY metrics.acc DESC`) can then
walk that metric's values within the experiment in order and stop at the page's end, whatever the
planner's statistics say about the experiment's size (right after an experiment is filled they say it is
tiny, and the planner used to read every run of a 100,000-run experiment). The trigger fills the column
on insert, so writers need not know it (a run never changes experiment).

Revision ID: 022
Revises: 021
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "022"
down_revision: str | None = "021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGGER = "trg_run_latest_metrics_experiment"
INDEX = "ix_run_latest_metrics_experiment_id_key_value"


def upgrade() -> None:
    with op.batch_alter_table("run_latest_metrics") as batch:
        batch.add_column(sa.Column("experiment_id", sa.Uuid(), nullable=True))
    op.execute(
        "UPDATE run_latest_metrics SET experiment_id = "
        "(SELECT experiment_id FROM experiment_runs WHERE experiment_runs.id = run_latest_metrics.run_id)"
    )
    op.create_index(INDEX, "run_latest_metrics", ["experiment_id", "key", "value"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION run_latest_metrics_experiment() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.experiment_id IS NULL THEN
                    SELECT experiment_id INTO NEW.experiment_id FROM experiment_runs WHERE id = NEW.run_id;
                END IF;
                RETURN NEW;
            END $$
            """
        )
        op.execute(
            f"CREATE TRIGGER {TRIGGER} BEFORE INSERT ON run_latest_metrics FOR EACH ROW "
            "EXECUTE FUNCTION run_latest_metrics_experiment()"
        )
    else:
        # SQLite's BEFORE triggers cannot change the new row: the row is completed right after its insert.
        op.execute(
            f"CREATE TRIGGER {TRIGGER} AFTER INSERT ON run_latest_metrics FOR EACH ROW "
            "WHEN NEW.experiment_id IS NULL BEGIN "
            "UPDATE run_latest_metrics SET experiment_id = "
            "(SELECT experiment_id FROM experiment_runs WHERE id = NEW.run_id) "
            "WHERE run_id = NEW.run_id AND key = NEW.key; END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER {TRIGGER} ON run_latest_metrics")
        op.execute("DROP FUNCTION run_latest_metrics_experiment()")
    else:
        op.execute(f"DROP TRIGGER {TRIGGER}")
    op.drop_index(INDEX, table_name="run_latest_metrics")
    with op.batch_alter_table("run_latest_metrics") as batch:
        batch.drop_column("experiment_id")
