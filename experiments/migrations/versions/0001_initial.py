"""The first schema: users, tokens, artifacts, experiments, experiment_resources, events.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


# frozen here: a later change of the vocabularies is a new revision
ROLES = ("experimenter", "operator")
STATES = ("Waiting", "toLaunch", "Launching", "Running", "Finishing", "Terminated", "Stopped", "Error")
RADIOS = ("ble", "zigbee", "wifi", "lora-experimental")
KINDS = ("wheel", "script")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint(_one_of("role", ROLES), name="ck_users_role"),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("prefix", sa.String(16), nullable=False, unique=True),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False, index=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("last_used_at", TS, nullable=True),
    )
    op.create_table(
        "artifacts",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint(_one_of("kind", KINDS), name="ck_artifacts_kind"),
    )
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False, index=True),
        sa.Column("state", sa.String(12), nullable=False, index=True),
        sa.Column("start", TS, nullable=True),
        sa.Column("duration_s", sa.Integer, nullable=False),
        sa.Column("deadline", TS, nullable=True),
        sa.Column("parameters", sa.JSON, nullable=False),
        sa.Column("artifact_sha256", sa.String(64), sa.ForeignKey("artifacts.sha256"), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint(_one_of("state", STATES), name="ck_experiments_state"),
    )
    op.create_table(
        "experiment_resources",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "experiment_id",
            sa.Integer,
            sa.ForeignKey("experiments.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("gateway", sa.String(100), nullable=False, index=True),
        sa.Column("radio", sa.String(20), nullable=False),
        sa.CheckConstraint(_one_of("radio", RADIOS), name="ck_experiment_resources_radio"),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "experiment_id",
            sa.Integer,
            sa.ForeignKey("experiments.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("from_state", sa.String(12), nullable=True),
        sa.Column("to_state", sa.String(12), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("events", "experiment_resources", "experiments", "artifacts", "tokens", "users"):
        op.drop_table(table)
