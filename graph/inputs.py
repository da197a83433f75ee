"""Inputs shared by several mutations, and their translation into the use-cases' plain values."""

from decimal import Decimal

import strawberry

from app.billing.pricing import Charge, ChargeModel, Tier
from app.billing.waterfall import ShareBase, ShareKind
from app.services.agreements import AgreementDraft, RuleDraft
from graph.ids import decode_id, decode_optional


@strawberry.input
class TierInput:
    up_to: Decimal | None = None
    unit_price: Decimal
    flat_fee: Decimal | None = None


@strawberry.input
class ChargeInput:
    metric: str
    model: ChargeModel
    unit_price: Decimal | None = None
    tiers: list[TierInput] | None = None
    package_size: Decimal | None = None
    package_price: Decimal | None = None
    free_units: Decimal | None = None
    rate_percent: Decimal | None = None
    fixed_fee: Decimal | None = None
    min_per_event: Decimal | None = None
    max_per_event: Decimal | None = None

    def to_charge(self) -> Charge:
        return Charge(
            metric=self.metric,
            model=self.model,
            unit_price=self.unit_price,
            tiers=tuple(
                Tier(up_to=t.up_to, unit_price=t.unit_price, flat_fee=t.flat_fee if t.flat_fee is not None else Decimal(0))
                for t in self.tiers or ()
            ),
            package_size=self.package_size,
            package_price=self.package_price,
            free_units=self.free_units,
            rate_percent=self.rate_percent,
            fixed_fee=self.fixed_fee,
            min_per_event=self.min_per_event,
            max_per_event=self.max_per_event,
        )


@strawberry.input
class ShareRuleInput:
    kind: ShareKind
    percent: Decimal | None = None
    amount: Decimal | None = None
    metric: str | None = None
    base: ShareBase | None = None
    weight: Decimal | None = None
    priority: int | None = None
    min: Decimal | None = None
    max: Decimal | None = None


@strawberry.input
class AgreementInput:
    payer_id: strawberry.ID | None = strawberry.field(default=None, description="Defaults to the caller's own party.")
    payee_id: strawberry.ID | None = strawberry.field(
        default=None, description="Defaults to the party being onboarded, where there is one."
    )
    service_id: strawberry.ID
    rule: ShareRuleInput
    effective_from: str | None = strawberry.field(
        default=None, description="Defaults to the current period; never a closed one."
    )

    def to_draft(self, *path: str) -> AgreementDraft:
        """Raises DomainError(NOT_FOUND) for an id of the wrong shape, with its path."""
        rule = self.rule
        return AgreementDraft(
            service_id=decode_id(self.service_id, "Service", *path, "serviceId"),
            payer_id=decode_optional(self.payer_id, "Party", *path, "payerId"),
            payee_id=decode_optional(self.payee_id, "Party", *path, "payeeId"),
            effective_from=self.effective_from,
            rule=RuleDraft(
                kind=rule.kind,
                percent=rule.percent,
                amount=rule.amount,
                metric=rule.metric,
                base=rule.base,
                weight=rule.weight,
                priority=rule.priority,
                min=rule.min,
                max=rule.max,
            ),
        )
