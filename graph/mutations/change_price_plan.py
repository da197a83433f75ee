import strawberry

from app.errors import DomainError
from app.services import catalog
from graph.context import Info
from graph.errors import user_errors
from graph.ids import decode_id
from graph.inputs import ChargeInput
from graph.mutations.create_service import CreateServicePayload
from graph.types import Service


@strawberry.input
class ChangePricePlanInput:
    service_id: strawberry.ID
    charges: list[ChargeInput]
    effective_from: str | None = strawberry.field(
        default=None,
        description="First period priced with the new plan; the current one when left out. Never a closed period.",
    )


async def change_price_plan(info: Info, input: ChangePricePlanInput) -> CreateServicePayload:
    principal = info.context.party_principal()
    try:
        service = await catalog.change_price_plan(
            info.context.rt,
            principal,
            service_id=decode_id(input.service_id, "Service", "input", "serviceId"),
            charges=[charge.to_charge() for charge in input.charges],
            effective_from=input.effective_from,
        )
    except DomainError as error:
        return CreateServicePayload(errors=user_errors(error))
    return CreateServicePayload(service=Service(row=service))
