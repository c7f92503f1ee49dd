"""The news sentiment monitor's tables: classified texts, items, stream offsets, alerts (genforge app monitor).

Revision ID: monitor_0001
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "monitor_0001"
down_revision = "0002"
branch_labels = ("monitor",)
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "monitor_texts",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("sentiment", sa.String(16), nullable=False),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("probs", sa.Text, nullable=False),
        sa.Column("seen", sa.Integer, nullable=False),
        sa.Column("first_seen", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "monitor_items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("t", sa.BigInteger, nullable=False, index=True),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("ext_id", sa.String(200), nullable=True),
        sa.Column("entity", sa.String(100), nullable=True, index=True),
        sa.Column("digest", sa.String(64), nullable=False, index=True),
        sa.Column("sentiment", sa.String(16), nullable=False),
        sa.Column("topic", sa.String(200), nullable=False, index=True),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("duplicate", sa.Boolean, nullable=False),
        sa.UniqueConstraint("source", "ext_id", name="uq_monitor_items_source_ext_id"),
    )
    op.create_table(
        "monitor_offsets",
        sa.Column("stream", sa.String(500), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("updated", WHEN, nullable=False),
    )
    op.create_table(
        "monitor_alerts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created", WHEN, nullable=False),
        sa.Column("rule", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("by", sa.String(16), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("window", sa.BigInteger, nullable=False, index=True),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("baseline", sa.Float, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("examples", sa.Text, nullable=False),
        sa.Column("delivered", sa.Text, nullable=False),
        sa.Column("acknowledged", WHEN, nullable=True),
        sa.Column("acknowledged_by", sa.String(200), nullable=True),
        sa.UniqueConstraint("rule", "key", "window", name="uq_monitor_alerts_rule_key_window"),
    )


def downgrade() -> None:
    for table in ("monitor_alerts", "monitor_offsets", "monitor_items", "monitor_texts"):
        op.drop_table(table)
