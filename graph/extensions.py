"""Schema extensions: the authentication gate and the shaping of errors."""

import logging
import time

from graphql import ExecutionResult, GraphQLError, OperationDefinitionNode, get_operation_ast
from strawberry.extensions import SchemaExtension

from app.errors import AccessDenied, DomainError
from app.observability import OPERATIONS
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
with their parsed documents: app/main.py answers their successful queries without going through
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


class ErrorShaping(SchemaExtension):
    """Refusals keep their code and field path; anything unexpected is masked behind a request id
    (the detail goes to the log)."""

    def on_operation(self):
        yield
        result = self.execution_context.result
        if result is None or not getattr(result, "errors", None):
            return
        result.errors = [self._shape(error) for error in result.errors]

    def _shape(self, error: GraphQLError) -> GraphQLError:
        original = error.original_error
        if original is None or isinstance(original, GraphQLError):
            return error
        if isinstance(original, DomainError):
            shaped = top_level(original)
        elif isinstance(original, AccessDenied):
            shaped = coded("FORBIDDEN", str(original))
        else:
            request_id = self.execution_context.context.request_id
            log.error("unexpected error, request %s", request_id, exc_info=original)
            shaped = GraphQLError(
                "Unexpected error.", extensions={"code": "INTERNAL", "requestId": request_id}
            )
        return GraphQLError(
            shaped.message, nodes=error.nodes, path=error.path, extensions=shaped.extensions
        )


class OperationMetrics(SchemaExtension):
    """Each operation's latency by name and type, for /metrics."""

    def on_operation(self):
        started = time.perf_counter()
        yield
        context = self.execution_context
        kind = context.operation_type.value if context.operation_type else "unknown"
        label = operation_label(context.graphql_document, context.operation_name)
        OPERATIONS.labels(operation=label, type=kind).observe(time.perf_counter() - started)


def operation_label(document, operation_name: str | None) -> str:
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
            return name
    return "unknown"
