"""Schema extensions: the authentication gate, the shaping of errors and their log lines."""

import logging
import time

from graphql import ExecutionResult, GraphQLError, OperationDefinitionNode, get_operation_ast
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from app.errors import AccessDenied, DomainError
from app.observability import OPERATIONS
from app.ingest.record import MAX_BATCH
from graph.errors import coded, top_level

log = logging.getLogger("shareflow.graphql")

_INTROSPECTION = {"__schema", "__type", "__typename"}


def _introspection_only(document) -> bool:
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            for selection in definition.selection_set.selections:
                name = getattr(getattr(selection, "name", None), "value", None)
                if name not in _INTROSPECTION:
                    return False
    return True


PREPARED: dict[str, object] = {}
"""Query texts that got through parsing and every validation rule of the schema (limits included),
with their parsed documents: graph/view.py answers their successful queries without going through
the extensions again. Validity depends on the text alone, so an entry never goes stale."""
_PREPARED_MAX = 512


class AuthenticationGate(SchemaExtension):
    """Deny by default: without a valid key only the schema itself may be read."""

    def on_execute(self):
        execution_context = self.execution_context
        context = execution_context.context
        document = execution_context.graphql_document
        query = execution_context.query
        if document is not None and type(query) is str and query not in PREPARED:
            # Executing means parsing and validation passed: remember the document.
            if len(PREPARED) >= _PREPARED_MAX:
                del PREPARED[next(iter(PREPARED))]  # the oldest: the others stay fast
            PREPARED[query] = document
        if context.principal is None and document is not None and not _introspection_only(document):
            self.execution_context.result = ExecutionResult(
                data=None, errors=[coded("UNAUTHENTICATED", "a valid API key is required")]
            )
        yield


MAX_LIST_ITEMS = MAX_BATCH
"The longest list a variable may carry (recordUsage's events, quote's usage items)."


def oversized_list(document, operation_name: str | None, variables) -> GraphQLError | None:
    """BATCH_TOO_LARGE for a list variable of more than MAX_LIST_ITEMS items, judged on the
    variables as sent: coercing and converting them is work that grows with every item, so the
    cap must come first (a quote of 100,000 items held the event loop for two seconds before the
    use-case's own cap saw it). The field is the argument the variable is given to."""
    if type(variables) is not dict:
        return None
    for name, value in variables.items():
        if type(value) is list and len(value) > MAX_LIST_ITEMS:
            return GraphQLError(
                f"at most {MAX_LIST_ITEMS} items in a list", extensions={"code": "BATCH_TOO_LARGE", "field": [_argument_of(document, operation_name, name)]}
            )
    return None


def _argument_of(document, operation_name: str | None, variable: str) -> str:
    """The name of the root field's argument that takes `$variable` (else the variable's name)."""
    operation = get_operation_ast(document, operation_name) if document is not None else None
    for selection in operation.selection_set.selections if operation is not None else ():
        for argument in getattr(selection, "arguments", None) or ():
            if getattr(getattr(argument.value, "name", None), "value", None) == variable:
                return argument.name.value
    return variable


class ListCap(SchemaExtension):
    """Refuses an operation whose variables carry an oversized list before anything runs."""

    def on_execute(self):
        context = self.execution_context
        if context.result is None:
            refusal = oversized_list(context.graphql_document, context.operation_name, context.variables)
            if refusal is not None:
                context.result = ExecutionResult(data=None, errors=[refusal])
        yield


class SubscriptionsOverWebSocket(SchemaExtension):
    """A subscription sent over HTTP is the client's mistake: 400 INVALID, nothing run (strawberry
    would run it as a query, and its stream would fail as the server's fault)."""

    def on_execute(self):
        context = self.execution_context
        request = getattr(context.context, "request", None)
        if (
            context.result is None
            and context.operation_type is OperationType.SUBSCRIPTION
            and request is not None
            and request.scope["type"] == "http"
        ):
            context.result = ExecutionResult(
                data=None, errors=[coded("INVALID", "subscriptions are served over WebSocket on /graphql")]
            )
            context.context.response.status_code = 400
        yield


class ErrorShaping(SchemaExtension):
    """Refusals keep their code and field path; anything unexpected is masked behind a request id
    (the detail goes to the log): `shape_error` for each error of the result."""

    def on_operation(self):
        yield
        result = self.execution_context.result
        if result is None or not getattr(result, "errors", None):
            return
        request_id = self.execution_context.context.request_id
        result.errors = [shape_error(error, request_id) for error in result.errors]


def shape_error(error: GraphQLError, request_id: str | None) -> GraphQLError:
    """The error as the caller sees it: a refusal with its code and path, anything unexpected
    logged at ERROR and masked behind the request id."""
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        return error
    if isinstance(original, DomainError):
        shaped = top_level(original)
    elif isinstance(original, AccessDenied):
        shaped = coded("FORBIDDEN", str(original))
    else:
        log.error("unexpected error, request %s", request_id, exc_info=original)
        shaped = GraphQLError("Unexpected error.", extensions={"code": "INTERNAL", "requestId": request_id})
    return GraphQLError(shaped.message, nodes=error.nodes, path=error.path, extensions=shaped.extensions)


def log_errors(errors: list[GraphQLError], execution_context) -> None:
    """The schema's `process_errors`: a caller's mistake (a refusal, a document that does not parse
    or validate) is one INFO line naming the key and its party, so that no client can flood the log
    with tracebacks; the server's own faults are logged at ERROR, with their traceback, by
    ErrorShaping, which masks them."""
    for error in errors:
        original = error.original_error
        if original is not None and not isinstance(original, (GraphQLError, DomainError, AccessDenied)):
            continue
        context = execution_context.context if execution_context is not None else None
        caller = getattr(context, "caller", None)
        principal = getattr(context, "principal", None)
        code = (error.extensions or {}).get("code") or (
            original.code if isinstance(original, DomainError) else "FORBIDDEN" if isinstance(original, AccessDenied) else "INVALID"
        )
        log.info(
            "refused %s: %s (path %s, key %s, party %s)", code, error.message, error.path,
            caller.key_prefix if caller is not None else ("operator" if principal is not None else "none"),
            principal.party_id if principal is not None else None,
        )


class OperationMetrics(SchemaExtension):
    """Each operation's latency by name and type, for /metrics."""

    def on_operation(self):
        started = time.perf_counter()
        yield
        context = self.execution_context
        kind = context.operation_type.value if context.operation_type else "unknown"
        name = operation_name_of(context.graphql_document, context.operation_name)
        authenticated = getattr(context.context, "principal", None) is not None
        rt = getattr(context.context, "rt", None)
        label = rt.operation_labels.label(name, authenticated) if rt is not None else "unknown"
        OPERATIONS.labels(operation=label, type=kind).observe(time.perf_counter() - started)


def operation_name_of(document, operation_name: str | None) -> str:
    """The operation's name, or for an anonymous one its first root field (`{ me { ... } }` is
    "me"), so that the metrics say what was asked without one series per query text."""
    operation = get_operation_ast(document, operation_name) if document is not None else None
    if operation is None:
        return "unknown"
    if operation.name:
        return operation.name.value[:64]
    for selection in operation.selection_set.selections:
        name = getattr(getattr(selection, "name", None), "value", None)
        if name:
            return name[:64]
    return "unknown"
