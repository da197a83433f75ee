"""Every override of strawberry's or graphql-core's internals, behind one switch.

With SHAREFLOW_ENGINE_OVERRIDES=on (the default) the gateway runs them; with `off` it is plain
strawberry: its own executor, argument conversion and WebSocket handlers (with the socket-key
binding of graph/sockets.py, a security feature of both modes), and no fast path. Each override
answers exactly what plain strawberry answers (tests/graph/test_engine_switch.py runs the same
operations both ways; each module's own differential test compares it with the whole way). Each
relies on private names of the versions pinned in pyproject.toml, which its docstring lists:

- plain_leaves: plain fields and list items read at once (long result lists).
- list_variables: list variables coerced by compiled coercers (recordUsage's batches).
- coerced_events: recordUsage resolved from graphql-core's coerced events.
- shared_results: one execution of a subscription message per payload, operation and access.
- socket_outlet: later subscription messages sent straight to the socket, encoded once.
- known_queries: the fast path for known valid queries over HTTP.
"""

from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from graph.engine.list_variables import CompiledListVariables
from graph.engine.plain_leaves import PlainLeaves
from graph.engine.shared_results import SharedSubscriptionResults


class ShortcutExecutor(SharedSubscriptionResults, PlainLeaves, CompiledListVariables, StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor for every operation, with the overrides' shortcuts: subscription
    messages shared, plain fields read at once, list variables coerced by compiled coercers."""
