"""How refusals reach the client: payload errors for the caller's mistakes, top-level otherwise."""

import strawberry
from graphql import GraphQLError

from app.errors import DomainError, FlowTooLarge, Problem
from graph.ids import to_global_id


@strawberry.type(description="One error a mutation reports about its input.")
class UserError:
    field: list[str] | None = strawberry.field(
        description='Path to the input field at fault, e.g. ["input", "agreements", "0", "percent"].'
    )
    code: str
    message: str


def user_errors(error: DomainError) -> list[UserError]:
    return [UserError(field=list(p.path) or None, code=p.code, message=_message(error, p)) for p in error.problems]


def top_level(error: DomainError) -> GraphQLError:
    """A query's refusal: the first problem's code and field path in the error's extensions."""
    problem = error.problems[0]
    message = "; ".join(_message(error, p) for p in error.problems)
    return GraphQLError(
        message, extensions={"code": problem.code, "field": list(problem.path), "problems": len(error.problems)}
    )


def _message(error: DomainError, problem: Problem) -> str:
    """A FLOW_OVERFLOW names what to end by the global id the client knows it by."""
    if isinstance(error, FlowTooLarge):
        kind, row_id = error.culprit
        return f"{problem.message} ({kind} {to_global_id(kind, row_id)})"
    return problem.message


def coded(code: str, message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": code})
