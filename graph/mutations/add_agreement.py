import strawberry

from app.errors import DomainError
from app.services import agreements
from graph.context import Info
from graph.errors import UserError, user_errors
from graph.inputs import AgreementInput
from graph.types import Agreement


@strawberry.type
class AgreementPayload:
    agreement: Agreement | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


async def add_agreement(info: Info, input: AgreementInput) -> AgreementPayload:
    principal = info.context.party_principal()
    try:
        row = await agreements.add_agreement(info.context.rt, principal, input.to_draft("input"))
    except DomainError as error:
        return AgreementPayload(errors=user_errors(error))
    return AgreementPayload(agreement=Agreement(row=row))
