"""What running experiments on gateways needs: per-resource reported state and results, gateways' availability.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)

# frozen here: the agent's reported phases (gateways/agent/experiments.py), a later change is a new revision
PHASES = ("fetching", "waiting", "running", "stopping", "finished", "failed", "stopped", "refused")


def upgrade() -> None:
    with op.batch_alter_table("experiments") as t:
        t.add_column(sa.Column("started_at", TS, nullable=True))
        t.add_column(sa.Column("ended_at", TS, nullable=True))
    with op.batch_alter_table("experiment_resources") as t:
        t.add_column(sa.Column("phase", sa.String(12), nullable=True))
        t.add_column(sa.Column("pid", sa.Integer, nullable=True))
        t.add_column(sa.Column("exit_code", sa.Integer, nullable=True))
        t.add_column(sa.Column("error", sa.Text, nullable=False, server_default=""))
        t.add_column(sa.Column("log_tail", sa.Text, nullable=False, server_default=""))
        t.add_column(sa.Column("reported_at", TS, nullable=True))
        t.add_column(sa.Column("results_sha256", sa.String(64), nullable=True))
        t.add_column(sa.Column("results_size", sa.Integer, nullable=True))
        t.create_check_constraint(
            "ck_experiment_resources_phase", f"phase IS NULL OR phase IN ({', '.join(repr(p) for p in PHASES)})"
        )
    op.create_table(
        "gateways",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("online", sa.Boolean, nullable=True),
        sa.Column("status_at", TS, nullable=True),
        sa.Column("health_at", TS, nullable=True),
        sa.Column("selftest_failed", sa.Integer, nullable=True),
        sa.Column("selftest_at", TS, nullable=True),
        sa.Column("selftest_detail", sa.Text, nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("gateways")
    with op.batch_alter_table("experiment_resources") as t:
        t.drop_constraint("ck_experiment_resources_phase", type_="check")
        for c in ("results_size", "results_sha256", "reported_at", "log_tail", "error", "exit_code", "pid", "phase"):
            t.drop_column(c)
    with op.batch_alter_table("experiments") as t:
        t.drop_column("ended_at")
        t.drop_column("started_at")
