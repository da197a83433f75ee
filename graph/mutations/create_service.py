import strawberry

from app.errors import DomainError
from app.services import catalog
from graph.context import Info
from graph.errors import UserError, user_errors
from graph.ids import decode_id, decode_optional
from graph.inputs import ChargeInput
from graph.types import Service


@strawberry.input
class CreateServiceInput:
    name: str
    provider_id: strawberry.ID
    billed_by_id: strawberry.ID | None = None
    currency: str | None = None
    charges: list[ChargeInput]


@strawberry.type
class CreateServicePayload:
    service: Service | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


async def create_service(info: Info, input: CreateServiceInput) -> CreateServicePayload:
    principal = info.context.party_principal()
    try:
        service, _ = await catalog.create_service(
            info.context.rt,
            principal,
            name=input.name,
            provider_id=decode_id(input.provider_id, "Party", "input", "providerId"),
            billed_by_id=decode_optional(input.billed_by_id, "Party", "input", "billedById"),
            currency=input.currency,
            charges=[charge.to_charge() for charge in input.charges],
        )
    except DomainError as error:
        return CreateServicePayload(errors=user_errors(error))
    return CreateServicePayload(service=Service(row=service))
