"""The per-request context: the runtime, the caller, and loaders built for that caller."""

import uuid
from dataclasses import dataclass, field
from typing import Any

import strawberry
from graphql import GraphQLError

from app.auth import Principal
from app.runtime import Runtime
from graph.loaders import Loaders


@dataclass
class Context:
    rt: Runtime
    principal: Principal | None
    request: Any = None
    response: Any = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    _loaders: Loaders | None = None

    @property
    def loaders(self) -> Loaders:
        if self._loaders is None:
            self._loaders = Loaders.build(self.rt, self.party_principal())
        return self._loaders

    def party_principal(self) -> Principal:
        """The caller, who must be a party of a network (the operator key is not one)."""
        if self.principal is None:
            raise GraphQLError("a valid API key is required", extensions={"code": "UNAUTHENTICATED"})
        if self.principal.network_id is None:
            raise GraphQLError("the operator key may only create networks", extensions={"code": "FORBIDDEN"})
        return self.principal


Info = strawberry.Info[Context, None]
