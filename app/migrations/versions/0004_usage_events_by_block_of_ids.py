"""usage events by block of ids: the index by consumer leads with the block, consumer_blocks lists
the blocks of each consumer's events (models.usage.EVENT_BLOCK)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENT_BLOCK = 16384
"models.usage.EVENT_BLOCK when this revision was written: the stored blocks follow it."

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    # SQLite adds a stored generated column only by building the table anew (batch mode does).
    with op.batch_alter_table('usage_events', schema=None, recreate='auto') as batch_op:
        batch_op.drop_index('ix_usage_events_consumer')
        batch_op.add_column(sa.Column('id_block', sa.BigInteger(), sa.Computed(f'id / {EVENT_BLOCK}', persisted=True)))
    with op.batch_alter_table('usage_events', schema=None) as batch_op:
        batch_op.create_index('ix_usage_events_consumer', ['network_id', 'id_block', 'consumer_id', 'id'], unique=False)
    op.create_table('consumer_blocks',
    sa.Column('network_id', _ID, nullable=False),
    sa.Column('consumer_id', _ID, nullable=False),
    sa.Column('id_block', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('network_id', 'consumer_id', 'id_block'),
    sqlite_with_rowid=False,
    )
    op.execute(
        'INSERT INTO consumer_blocks (network_id, consumer_id, id_block) '
        'SELECT DISTINCT network_id, consumer_id, id_block FROM usage_events'
    )


def downgrade() -> None:
    op.drop_table('consumer_blocks')
    with op.batch_alter_table('usage_events', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_events_consumer')
        batch_op.drop_column('id_block')
    with op.batch_alter_table('usage_events', schema=None) as batch_op:
        batch_op.create_index('ix_usage_events_consumer', ['network_id', 'consumer_id', 'id'], unique=False)
