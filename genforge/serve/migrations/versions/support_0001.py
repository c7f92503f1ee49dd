"""The support assistant's sessions, turns and hand-off tickets (genforge app support).

Revision ID: support_0001
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "support_0001"
down_revision = "0002"
branch_labels = ("support",)
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "support_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created", WHEN, nullable=False),
        sa.Column("caller", sa.String(200), nullable=False),
    )
    op.create_table(
        "support_turns",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("session_id", sa.String(64), sa.ForeignKey("support_sessions.id"), nullable=False, index=True),
        sa.Column("created", WHEN, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("action", sa.String(16), nullable=True),
        sa.Column("confidence", sa.Float, nullable=True),
        sa.Column("sources", sa.Text, nullable=True),
        sa.Column("response_id", sa.String(64), nullable=True),
    )
    op.create_table(
        "support_tickets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("session_id", sa.String(64), sa.ForeignKey("support_sessions.id"), nullable=False, index=True),
        sa.Column("created", WHEN, nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("transcript", sa.Text, nullable=False),
        sa.Column("closed", WHEN, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("support_tickets")
    op.drop_table("support_turns")
    op.drop_table("support_sessions")
