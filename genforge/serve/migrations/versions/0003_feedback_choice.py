"""Feedback names the choice it rates (a response with n > 1 choices); rows before it rated the first.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feedback") as table:  # batch: SQLite alters a table by copying it
        table.add_column(sa.Column("choice", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("feedback") as table:
        table.drop_column("choice")
