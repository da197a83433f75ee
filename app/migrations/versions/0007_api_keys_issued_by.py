"""api keys record the key that issued them (revoking a key revokes the keys it issued)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 01:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    # Keys issued before this revision name no issuer: nothing is known of it.
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('issued_by_key_id', _ID, nullable=True))
        batch_op.create_foreign_key('fk_api_keys_issued_by_key_id', 'api_keys', ['issued_by_key_id'], ['id'])
        batch_op.create_index('ix_api_keys_issued_by', ['network_id', 'issued_by_key_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index('ix_api_keys_issued_by')
        batch_op.drop_constraint('fk_api_keys_issued_by_key_id', type_='foreignkey')
        batch_op.drop_column('issued_by_key_id')
