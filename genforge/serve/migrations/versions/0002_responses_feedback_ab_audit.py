"""Stored requests/responses, user feedback, A/B traffic weights and the safety audit.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ab_weights",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("experiment", sa.String(200), nullable=False, index=True),
        sa.Column("weights", sa.Text, nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("created", WHEN, nullable=False),
    )
    op.create_table(
        "responses",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created", WHEN, nullable=False, index=True),
        sa.Column("route", sa.String(16), nullable=False),
        sa.Column("model", sa.String(200), nullable=False, index=True),
        sa.Column("variant", sa.String(200), nullable=False),
        sa.Column("weights_id", sa.Integer, sa.ForeignKey("ab_weights.id"), nullable=True),
        sa.Column("user", sa.String(256), nullable=True),
        sa.Column("caller", sa.String(200), nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("response", sa.Text, nullable=False),
        sa.Column("finish", sa.String(200), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("latency", sa.Float, nullable=False),
        sa.Column("ttft", sa.Float, nullable=True),
    )
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("response_id", sa.String(64), sa.ForeignKey("responses.id"), nullable=False, index=True),
        sa.Column("created", WHEN, nullable=False),
        sa.Column("thumbs", sa.String(4), nullable=True),
        sa.Column("rating", sa.Integer, nullable=True),
        sa.Column("positive", sa.Boolean, nullable=True),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("correction", sa.Text, nullable=True),
        sa.Column("caller", sa.String(200), nullable=False),
    )
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created", WHEN, nullable=False, index=True),
        sa.Column("response_id", sa.String(64), nullable=True, index=True),
        sa.Column("route", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(8), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("reasons", sa.Text, nullable=False),
        sa.Column("review", sa.String(16), nullable=True),
        sa.Column("user", sa.String(256), nullable=True),
        sa.Column("caller", sa.String(200), nullable=False),
    )


def downgrade() -> None:
    for table in ("audit", "feedback", "responses", "ab_weights"):
        op.drop_table(table)
