"""Settlement arithmetic: a party's statement lines and totals from its services' splits."""

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from enum import Enum

from app.billing.waterfall import Split


class Direction(str, Enum):
    IN = "IN"
    OUT = "OUT"


@dataclass(frozen=True)
class StatementLine:
    """Money one party receives (IN) or pays (OUT) for one service, in minor units.

    `counterparty` None stands for the service's consumers taken together. An adjustment line
    corrects `origin_period` and is signed: a shrinking payment is a negative amount, never a
    reversed direction.
    """

    counterparty: Hashable | None
    service: Hashable
    direction: Direction
    amount: int
    adjustment: bool = False
    origin_period: str | None = None


@dataclass(frozen=True)
class Totals:
    receivable: int
    "All that flows in, consumers' payments included."
    payable: int
    "All that flows out."

    @property
    def net(self) -> int:
        """What the party keeps."""
        return self.receivable - self.payable


def party_lines(party: Hashable, service: Hashable, billing_party: Hashable, revenue: int, split: Split) -> list[StatementLine]:
    """One party's lines of one service's period: the consumers' payments when it bills the
    service, then every flow it receives or pays, in the split's order."""
    lines = []
    if party == billing_party and split.pools:
        lines.append(StatementLine(None, service, Direction.IN, revenue))
    for (payer, payee), amount in split.flows.items():
        if payee == party:
            lines.append(StatementLine(payer, service, Direction.IN, amount))
        if payer == party:
            lines.append(StatementLine(payee, service, Direction.OUT, amount))
    return lines


def totals(lines: Iterable[StatementLine]) -> Totals:
    receivable = payable = 0
    for line in lines:
        if line.direction is Direction.IN:
            receivable += line.amount
        else:
            payable += line.amount
    return Totals(receivable, payable)
