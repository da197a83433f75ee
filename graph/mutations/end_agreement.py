import strawberry

from app.errors import DomainError
from app.services import agreements
from graph.context import Info
from graph.errors import user_errors
from graph.ids import decode_id
from graph.mutations.add_agreement import AgreementPayload
from graph.types import Agreement


@strawberry.input
class EndAgreementInput:
    agreement_id: strawberry.ID
    effective_to: str = strawberry.field(description="First period no longer in force.")


async def end_agreement(info: Info, input: EndAgreementInput) -> AgreementPayload:
    principal = info.context.party_principal()
    try:
        row = await agreements.end_agreement(
            info.context.rt,
            principal,
            decode_id(input.agreement_id, "Agreement", "input", "agreementId"),
            input.effective_to,
        )
    except DomainError as error:
        return AgreementPayload(errors=user_errors(error))
    return AgreementPayload(agreement=Agreement(row=row))
