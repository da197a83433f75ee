"""Money-bearing answers: quotes, charge lines, revenue flows."""

from __future__ import annotations

from decimal import Decimal

import strawberry

from app.services import quotes
from graph.context import Info
from graph.types import Money, Party, Service


@strawberry.type
class ChargeLine:
    metric: str
    quantity: Decimal
    events: int
    amount: Money


@strawberry.type
class PartyAmount:
    party_id: strawberry.Private[int]
    amount: Money

    @strawberry.field
    async def party(self, info: Info) -> Party:
        return Party(row=await info.context.loaders.party_by_id.load(self.party_id))


@strawberry.type(
    description="Money from one party to another for one service in one period; consumers' payments are not listed one by one."
)
class RevenueFlow:
    payer_id: strawberry.Private[int]
    payee_id: strawberry.Private[int]
    service_id: strawberry.Private[int]
    period: str
    amount: Money
    adjustment: bool = strawberry.field(description="True when the flow corrects a closed period.")
    origin_period: str | None

    @strawberry.field
    async def payer(self, info: Info) -> Party:
        return Party(row=await info.context.loaders.party_by_id.load(self.payer_id))

    @strawberry.field
    async def payee(self, info: Info) -> Party:
        return Party(row=await info.context.loaders.party_by_id.load(self.payee_id))

    @strawberry.field
    async def service(self, info: Info) -> Service:
        return Service(row=await info.context.loaders.service_by_id.load(self.service_id))


@strawberry.type
class Quote:
    total: Money
    lines: list[ChargeLine]
    flows: list[RevenueFlow]
    retained: list[PartyAmount] = strawberry.field(
        description="What each party keeps after passing on its shares, consumers excluded."
    )

    @classmethod
    def of(cls, quote: quotes.Quote) -> Quote:
        currency = quote.currency
        return cls(
            total=Money.of(quote.total, currency),
            lines=[
                ChargeLine(metric=line.metric, quantity=line.quantity, events=line.events, amount=Money.of(line.amount, currency))
                for line in quote.lines
            ],
            flows=[
                RevenueFlow(
                    payer_id=payer,
                    payee_id=payee,
                    service_id=quote.service.id,
                    period=quote.period,
                    amount=Money.of(amount, currency),
                    adjustment=False,
                    origin_period=None,
                )
                for payer, payee, amount in quote.flows
            ],
            retained=[PartyAmount(party_id=party, amount=Money.of(amount, currency)) for party, amount in quote.retained],
        )
