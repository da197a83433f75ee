"""Settlement arithmetic: booked entries of a period, a party's statement lines and totals, and
the corrections of a closed period."""

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from app.billing.waterfall import Split


class Direction(str, Enum):
    IN = "IN"
    OUT = "OUT"


@dataclass(frozen=True)
class Entry:
    """A flow of one service in minor units: a debit of the payer, a credit of the payee.

    `from_consumer` marks a consumer's payment to the billing party (listed with the service's
    other consumers); `adjustment` a signed correction of `origin_period`.
    """

    service: Hashable
    payer: Hashable
    payee: Hashable
    amount: int
    from_consumer: bool = False
    adjustment: bool = False
    origin_period: str | None = None


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


def split_entries(service: Hashable, billing_party: Hashable, payments: Mapping[Hashable, int], split: Split) -> list[Entry]:
    """The entries of one service's period: each consumer's payment (`payments` by consumer, or
    one total under any key when consumers are taken together), then every flow of the split."""
    entries = [Entry(service, consumer, billing_party, amount, from_consumer=True) for consumer, amount in payments.items()]
    entries += [Entry(service, payer, payee, amount) for (payer, payee), amount in split.flows.items()]
    return entries


def statement_lines(party: Hashable, entries: Iterable[Entry]) -> list[StatementLine]:
    """A party's lines: its entries in and out, summed by counterparty, service, direction and
    correction origin; consumers' payments to it taken together. Lines that sum to zero are left
    out: a statement lists money that moved."""
    sums: dict[tuple, int] = {}
    for entry in entries:
        if entry.payee == party:
            key = (None if entry.from_consumer else entry.payer, entry.service, Direction.IN, entry.adjustment, entry.origin_period)
            sums[key] = sums.get(key, 0) + entry.amount
        if entry.payer == party:
            key = (entry.payee, entry.service, Direction.OUT, entry.adjustment, entry.origin_period)
            sums[key] = sums.get(key, 0) + entry.amount
    return [StatementLine(*key[:3], amount, key[3], key[4]) for key, amount in sums.items() if amount]


def totals(lines: Iterable[StatementLine]) -> Totals:
    receivable = payable = 0
    for line in lines:
        if line.direction is Direction.IN:
            receivable += line.amount
        else:
            payable += line.amount
    return Totals(receivable, payable)


BOOKS_LIMIT = 2**63 - 1
"The largest amount a 64-bit column of the books holds, in minor units."


def fits_books(lines: list[StatementLine]) -> bool:
    """Whether a statement's lines and totals fit the books' columns: each flow stays within the
    waterfall's FLOW_LIMIT, but a party's totals sum its flows of every service."""
    sums = totals(lines)
    return max(abs(sums.receivable), abs(sums.payable), *(abs(line.amount) for line in lines)) <= BOOKS_LIMIT


def corrections(recomputed: Iterable[Entry], booked: Iterable[Entry], origin_period: str) -> list[Entry]:
    """What a closed period still owes: per (service, payer, payee), the recomputed flow less what
    was booked for it already (its close and earlier corrections), as signed adjustments."""
    difference: dict[tuple, int] = {}
    consumer: dict[tuple, bool] = {}
    for sign, entries in ((1, recomputed), (-1, booked)):
        for entry in entries:
            key = (entry.service, entry.payer, entry.payee)
            difference[key] = difference.get(key, 0) + sign * entry.amount
            consumer[key] = entry.from_consumer
    return [
        Entry(*key, amount, from_consumer=consumer[key], adjustment=True, origin_period=origin_period)
        for key, amount in difference.items()
        if amount
    ]
