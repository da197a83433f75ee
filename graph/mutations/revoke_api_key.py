import strawberry

from app.errors import DomainError
from app.services import api_keys
from graph.context import Info
from graph.errors import user_errors
from graph.ids import decode_id
from graph.mutations.issue_api_key import ApiKeyPayload
from graph.types import ApiKey


async def revoke_api_key(info: Info, id: strawberry.ID) -> ApiKeyPayload:
    principal = info.context.party_principal()
    try:
        key = await api_keys.revoke_api_key(info.context.rt, principal, decode_id(id, "ApiKey", "id"))
    except DomainError as error:
        return ApiKeyPayload(errors=user_errors(error))
    return ApiKeyPayload(key=ApiKey(row=key))
