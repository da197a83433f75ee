"""list stored decimals out of range: agreements' rule values and price plans' charge values that
the decimal door (app.billing.money.read_decimal and check_decimal: plain notation, at most 32
characters, at most 10^12 in magnitude) would refuse today. Only an attack before issue #22
stored any; each is logged as a warning, nothing is changed (the owner ends or replaces them).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 01:40:00
"""

import logging
from collections.abc import Iterator, Sequence

import sqlalchemy as sa
from alembic import op

from app.billing.money import DECIMAL_TEXT_MAX, MAX_AMOUNT, read_decimal

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("shareflow.migrations")

RULE_COLUMNS = ('percent', 'amount', 'weight', 'min', 'max')
CHARGE_KEYS = ('unitPrice', 'packageSize', 'packagePrice', 'freeUnits', 'ratePercent', 'fixedFee', 'minPerEvent', 'maxPerEvent')
TIER_KEYS = ('upTo', 'unitPrice', 'flatFee')


def out_of_range(text: object) -> bool:
    """Whether a stored decimal's text lies outside what an input may be now; judged on its length
    first, so that a value of 100 MB is never read as a number."""
    if not isinstance(text, str) or len(text) > DECIMAL_TEXT_MAX:
        return True
    value = read_decimal(text)
    return not value.is_finite() or abs(value) > MAX_AMOUNT


def _charge_values(charges: object) -> Iterator[tuple[str, object]]:
    """(path in the plan, stored text) of every decimal of a plan's charges."""
    for index, charge in enumerate(charges if isinstance(charges, list) else ()):
        for key in CHARGE_KEYS:
            if charge.get(key) is not None:
                yield f'{index}.{key}', charge[key]
        for tier_index, tier in enumerate(charge.get('tiers') or ()):
            for key in TIER_KEYS:
                if tier.get(key) is not None:
                    yield f'{index}.tiers.{tier_index}.{key}', tier[key]


def _report(table: str, network_id: int, row_id: int, field: str, head: object, size: int | None) -> None:
    shown = head[:40] if isinstance(head, str) else repr(head)[:40]
    log.warning('out-of-range decimal: %s id=%s network=%s %s=%r (%s characters)', table, row_id, network_id, field, shown, size)


def upgrade() -> None:
    connection = op.get_bind()
    columns = ', '.join(f'substr({c}, 1, 40), length({c})' for c in RULE_COLUMNS)
    for row in connection.execute(sa.text(f'SELECT id, network_id, {columns} FROM agreements ORDER BY id')):
        for index, column in enumerate(RULE_COLUMNS):
            head, size = row[2 + 2 * index], row[3 + 2 * index]
            if head is not None and (size > DECIMAL_TEXT_MAX or out_of_range(head)):
                _report('agreements', row.network_id, row.id, column, head, size)
    plans = sa.table('price_plans', sa.column('id'), sa.column('network_id'), sa.column('charges', sa.JSON))
    for row in connection.execute(sa.select(plans.c.id, plans.c.network_id, plans.c.charges).order_by(plans.c.id)):
        for field, text in _charge_values(row.charges):
            if out_of_range(text):
                _report('price_plans', row.network_id, row.id, f'charges.{field}', text, len(text) if isinstance(text, str) else None)


def downgrade() -> None:
    """Nothing was changed."""
