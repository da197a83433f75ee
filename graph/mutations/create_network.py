import strawberry

from app.billing.money import RoundingMode as RoundingModeValue
from app.errors import DomainError
from app.services import networks
from graph.context import Info
from graph.errors import UserError, coded, user_errors
from graph.types import Network, RoundingMode


@strawberry.input
class CreateNetworkInput:
    name: str
    currency: str
    rounding_mode: RoundingMode | None = None
    owner_name: str
    first_period: str | None = strawberry.field(
        default=None,
        description='The first settlement period, e.g. "2026-01", for backfills; defaults to the current month.',
    )
    time_zone: str | None = strawberry.field(default=None, description="IANA time zone of the periods; UTC when left out.")


@strawberry.type
class CreateNetworkPayload:
    network: Network | None = None
    owner_api_key: str | None = strawberry.field(default=None, description="The owner's first key, shown once.")
    errors: list[UserError] = strawberry.field(default_factory=list)


async def create_network(info: Info, input: CreateNetworkInput) -> CreateNetworkPayload:
    """Only with the operator key of the deployment."""
    principal = info.context.principal
    if principal is None or not principal.is_operator:
        raise coded("FORBIDDEN", "only the operator key may create networks")
    try:
        created = await networks.create_network(
            info.context.rt,
            principal,
            name=input.name,
            currency=input.currency,
            owner_name=input.owner_name,
            rounding_mode=RoundingModeValue((input.rounding_mode or RoundingMode.HALF_UP).value),
            first_period=input.first_period,
            time_zone=input.time_zone,
        )
    except DomainError as error:
        return CreateNetworkPayload(errors=user_errors(error))
    return CreateNetworkPayload(network=Network(row=created.network), owner_api_key=created.owner_key)
