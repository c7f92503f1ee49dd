"""The monitor's alert detector state per rule and key, kept next to the rules' marks (genforge app monitor).

Revision ID: monitor_0002
Revises: monitor_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "monitor_0002"
down_revision = "monitor_0001"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "monitor_rule_states",
        sa.Column("rule", sa.String(200), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("definition", sa.String(64), nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("updated", WHEN, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("monitor_rule_states")
