"""idempotency keys unique per service: the unique key moves from (network, key) to (network,
key, service). Its leading (network, key) serves the look-ups of a batch's keys, and of a void's
without a service, as the old key did: one index over the keys, not two (a second one cost every
insert another random page, and a period of a million events half its recording speed)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08 01:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENT_BLOCK = 16384
"The blocks of ids of revision 0004 (models.usage.EVENT_BLOCK)."


def _unique_key(drop: str, create: str, columns: list[str]) -> None:
    """Swap the table's unique key. PostgreSQL alters it in place; SQLite drops a table's
    constraint only by building the table anew (batch mode), copying every stored event as it
    is. The generated id_block cannot be copied (SQLite refuses to insert into it): it is
    dropped and added again, computed anew, with the index that leads with it."""
    if op.get_bind().dialect.name != 'sqlite':
        op.drop_constraint(drop, 'usage_events', type_='unique')
        op.create_unique_constraint(create, 'usage_events', columns)
        return
    with op.batch_alter_table('usage_events', schema=None, recreate='always') as batch_op:
        batch_op.drop_index('ix_usage_events_consumer')
        batch_op.drop_column('id_block')
        batch_op.add_column(sa.Column('id_block', sa.BigInteger(), sa.Computed(f'id / {EVENT_BLOCK}', persisted=True)))
        batch_op.drop_constraint(drop, type_='unique')
        batch_op.create_unique_constraint(create, columns)
    with op.batch_alter_table('usage_events', schema=None) as batch_op:
        batch_op.create_index('ix_usage_events_consumer', ['network_id', 'id_block', 'consumer_id', 'id'], unique=False)


def upgrade() -> None:
    # No two stored events can clash under the wider key.
    _unique_key('uq_usage_events_key', 'uq_usage_events_service_key', ['network_id', 'idempotency_key', 'service_id'])


def downgrade() -> None:
    # Refused by the database once two services of a network use the same key.
    _unique_key('uq_usage_events_service_key', 'uq_usage_events_key', ['network_id', 'idempotency_key'])
