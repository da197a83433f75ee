"""The per-request context: the runtime, the caller, and loaders built for that caller."""

from dataclasses import dataclass
from typing import Any

import strawberry
from graphql import GraphQLError

from app import observability
from app.auth import Caller, Principal
from app.runtime import Runtime
from graph.loaders import Loaders


@dataclass(eq=False)
class Context:
    rt: Runtime
    principal: Principal | None
    request: Any = None
    response: Any = None
    caller: Caller | None = None
    "The verified key with its party and network rows (from the key cache): they prime the loaders."
    _loaders: Loaders | None = None

    @property
    def request_id(self) -> str:
        """The id the RequestIds middleware gave this request (the same one the logs carry)."""
        return observability.request_id.get()

    @property
    def loaders(self) -> Loaders:
        if self._loaders is None:
            principal = self.party_principal()
            caller = self.caller
            if caller is None:
                self._loaders = Loaders.build(self.rt, principal)
            else:
                # One build per cached key (its filters are what cost), fresh caches per request.
                built = caller.memo.get("loaders")
                if built is None or built[0] is not self.rt:
                    built = caller.memo["loaders"] = (self.rt, Loaders.build(self.rt, principal))
                self._loaders = built[1].fresh()
                self._loaders.prime_caller(caller.party, caller.network)
        return self._loaders

    def party_principal(self) -> Principal:
        """The caller, who must be a party of a network (the operator key is not one)."""
        if self.principal is None:
            raise GraphQLError("a valid API key is required", extensions={"code": "UNAUTHENTICATED"})
        if self.principal.network_id is None:
            raise GraphQLError("the operator key may only create networks", extensions={"code": "FORBIDDEN"})
        return self.principal


Info = strawberry.Info[Context, None]
