import strawberry

from app.errors import DomainError
from app.services import api_keys
from graph.context import Info
from graph.errors import UserError, user_errors
from graph.ids import decode_id
from graph.types import ApiKey


@strawberry.type
class ApiKeyPayload:
    key: ApiKey | None = None
    api_key: str | None = strawberry.field(
        default=None, description="The secret itself, shown once when issued; only its hash is stored."
    )
    errors: list[UserError] = strawberry.field(default_factory=list)


async def issue_api_key(info: Info, party_id: strawberry.ID) -> ApiKeyPayload:
    principal = info.context.party_principal()
    try:
        issued = await api_keys.issue_api_key(info.context.rt, principal, decode_id(party_id, "Party", "partyId"))
    except DomainError as error:
        return ApiKeyPayload(errors=user_errors(error))
    return ApiKeyPayload(key=ApiKey(row=issued.key), api_key=issued.secret)
