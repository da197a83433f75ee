"""The root query fields: thin resolvers over loaders and use-cases."""

from decimal import Decimal

import strawberry

from app.errors import DomainError
from app.services import quotes
from graph.context import Info
from graph.ids import decode_id, split_global_id
from graph.types import Agreement, Network, Node, Party, Principal, Service, ValueChain
from graph.values import Quote

# Node types by global-id prefix, with the loader that finds what the caller may see.
_NODES = {
    "Party": (Party, lambda loaders: loaders.party_by_id),
    "Service": (Service, lambda loaders: loaders.service_by_id),
    "Agreement": (Agreement, lambda loaders: loaders.agreement_by_id),
    "Network": (Network, lambda loaders: loaders.network_by_id),
}


async def _me_loaded(loaders, principal) -> Principal:
    return Principal(
        party=Party(row=await loaders.party_by_id.load(principal.party_id)),
        network=Network(row=await loaders.network_by_id.load(principal.network_id)),
    )


async def _service(info: Info, global_id: str, argument: str) -> Service | None:
    info.context.party_principal()
    row = await info.context.loaders.service_by_id.load(decode_id(global_id, "Service", argument))
    return None if row is None else Service(row=row)


@strawberry.input(description="One hypothetical usage event of one consumer.")
class QuoteUsageInput:
    metric: str
    quantity: Decimal


@strawberry.type
class Query:
    @strawberry.field
    async def node(self, info: Info, id: strawberry.ID) -> Node | None:
        info.context.party_principal()
        parts = split_global_id(id)
        if parts is None:
            raise DomainError.of("NOT_FOUND", "not a global id", "id")
        if parts[0] not in _NODES or not parts[1].isdigit() or len(parts[1]) > 18:
            return None
        node_type, loader = _NODES[parts[0]]
        row = await loader(info.context.loaders).load(int(parts[1]))
        return None if row is None else node_type(row=row)

    @strawberry.field
    def me(self, info: Info) -> Principal:
        # Synchronous while the key cache holds the caller's rows (nearly always): the first query
        # of every frontend then runs without a single suspension. Else a coroutine, which
        # graphql-core awaits like any async resolver's.
        context = info.context
        principal = context.party_principal()
        caller = context.caller
        if caller is not None and caller.party is not None and caller.network is not None:
            return Principal(party=Party(row=caller.party), network=Network(row=caller.network))
        return _me_loaded(context.loaders, principal)

    @strawberry.field
    async def network(self, info: Info) -> Network:
        principal = info.context.party_principal()
        return Network(row=await info.context.loaders.network_by_id.load(principal.network_id))

    @strawberry.field
    async def party(self, info: Info, id: strawberry.ID) -> Party | None:
        info.context.party_principal()
        row = await info.context.loaders.party_by_id.load(decode_id(id, "Party", "id"))
        return None if row is None else Party(row=row)

    @strawberry.field
    async def service(self, info: Info, id: strawberry.ID) -> Service | None:
        return await _service(info, id, "id")

    @strawberry.field
    async def value_chain(self, info: Info, service_id: strawberry.ID, period: str | None = None) -> ValueChain | None:
        # Root resolvers get no Query instance (the root value is None): share a plain helper.
        service = await _service(info, service_id, "serviceId")
        if service is None:
            return None
        return await service.value_chain(info, period)

    @strawberry.field
    async def quote(
        self, info: Info, service_id: strawberry.ID, usage: list[QuoteUsageInput], period: str | None = None
    ) -> Quote | None:
        principal = info.context.party_principal()
        result = await quotes.quote(
            info.context.rt,
            principal,
            decode_id(service_id, "Service", "serviceId"),
            [(item.metric, item.quantity) for item in usage],
            period,
        )
        return Quote.of(result)
