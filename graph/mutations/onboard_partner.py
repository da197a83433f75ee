import strawberry

from app.errors import DomainError
from app.services import parties
from graph.context import Info
from graph.errors import UserError, user_errors
from graph.inputs import AgreementInput
from graph.types import Agreement, Party, PartyKind


@strawberry.input
class OnboardPartnerInput:
    name: str
    kind: PartyKind = strawberry.field(description="PROVIDER or PARTNER.")
    external_ref: str | None = None
    agreements: list[AgreementInput] | None = None
    issue_api_key: bool | None = None


@strawberry.type
class OnboardPartnerPayload:
    party: Party | None = None
    agreements: list[Agreement] = strawberry.field(default_factory=list)
    api_key: str | None = strawberry.field(default=None, description="Shown once; only its hash is stored.")
    errors: list[UserError] = strawberry.field(default_factory=list)


async def onboard_partner(info: Info, input: OnboardPartnerInput) -> OnboardPartnerPayload:
    principal = info.context.party_principal()
    try:
        drafts, problems = [], []
        for index, agreement in enumerate(input.agreements or ()):
            try:
                drafts.append(agreement.to_draft("input", "agreements", str(index)))
            except DomainError as error:
                problems.extend(error.problems)
        if problems:
            raise DomainError(*problems)
        onboarded = await parties.onboard_partner(
            info.context.rt,
            principal,
            name=input.name,
            kind=input.kind.value,
            external_ref=input.external_ref,
            agreements=drafts,
            issue_api_key=bool(input.issue_api_key),
        )
    except DomainError as error:
        return OnboardPartnerPayload(errors=user_errors(error))
    return OnboardPartnerPayload(
        party=Party(row=onboarded.party),
        agreements=[Agreement(row=row) for row in onboarded.agreements],
        api_key=onboarded.api_key,
    )


