"""graph/engine/plain_leaves.py: plain fields read at once answer exactly what graphql-core's whole
way answers, errors and their paths included, and leave fields with resolvers or middleware alone."""

from enum import Enum

import pytest
import strawberry
from strawberry.extensions import SchemaExtension
from strawberry.permission import BasePermission
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from graph.engine.plain_leaves import PlainLeaves


@strawberry.enum
class Colour(Enum):
    RED = "red"
    BLUE = "blue"


@strawberry.type
class Item:
    n: int
    name: str | None
    colour: Colour
    tags: list[str]
    must: str

    @strawberry.field
    def twice(self) -> int:
        return 2 * self.n


ITEMS = [
    Item(n=1, name="a", colour=Colour.RED, tags=[], must="x"),
    Item(n=2, name=None, colour=Colour.BLUE, tags=["t"], must="y"),
    Item(n=2**40, name="b", colour=Colour.RED, tags=[], must="z"),  # Int cannot represent it
    Item(n=3, name="c", colour="green", tags=[], must="w"),  # not a Colour
    Item(n=4, name="d", colour=Colour.BLUE, tags=[], must=None),  # null where it may not be
]


@strawberry.type
class Query:
    @strawberry.field
    def items(self) -> list[Item | None]:
        return ITEMS


class Plain(PlainLeaves, StrawberryGraphQLCoreExecutionContext):
    pass


QUERY = "{ items { n name colour tags must twice alias: n __typename } }"


def answer(schema: strawberry.Schema) -> tuple:
    result = schema.execute_sync(QUERY)
    errors = sorted((tuple(error.path), error.message) for error in result.errors or ())
    return result.data, errors


def test_plain_fields_answer_what_the_whole_way_answers_errors_included():
    fast = strawberry.Schema(query=Query, execution_context_class=Plain)
    data, errors = answer(fast)
    assert (data, errors) == answer(strawberry.Schema(query=Query))
    assert data["items"][0] == {"n": 1, "name": "a", "colour": "RED", "tags": [], "must": "x", "twice": 2, "alias": 1,
                                "__typename": "Item"}
    assert data["items"][1]["name"] is None and data["items"][1]["tags"] == ["t"]
    assert data["items"][2:] == [None, None, None]
    assert [path for path, _ in errors] == [("items", 2, "n"), ("items", 3, "colour"), ("items", 4, "must")]


def test_a_resolve_hook_sees_every_field_as_before():
    def watched(executor) -> list[tuple]:
        seen = []

        class Watch(SchemaExtension):
            def resolve(self, _next, root, info, *args, **kwargs):
                seen.append(tuple(info.path.as_list()))
                return _next(root, info, *args, **kwargs)

        answer(strawberry.Schema(query=Query, execution_context_class=executor, extensions=[Watch]))
        return seen

    seen = watched(Plain)
    assert seen == watched(StrawberryGraphQLCoreExecutionContext)
    assert ("items", 0, "n") in seen and ("items", 4, "must") in seen


@pytest.mark.parametrize("value", [[], ["t"]])
def test_a_plain_list_is_answered_whole_empty_or_not(value):
    schema = strawberry.Schema(query=Query, execution_context_class=Plain)
    ITEMS[0].tags = value
    try:
        assert schema.execute_sync("{ items { tags } }").data["items"][0] == {"tags": value}
    finally:
        ITEMS[0].tags = []


class WholeWay:
    """Counts the list items completed the whole way (it sits below PlainLeaves)."""

    items: list = []

    def complete_list_item_value(self, item, *args, **kwargs):
        WholeWay.items.append(item)
        return super().complete_list_item_value(item, *args, **kwargs)


class CountedPlain(PlainLeaves, WholeWay, StrawberryGraphQLCoreExecutionContext):
    pass


ITEM_QUERY = "{ items { n name colour tags must alias: n __typename } }"


def test_an_item_of_plain_fields_is_answered_at_once_and_an_unusual_one_the_whole_way():
    WholeWay.items = []
    fast = strawberry.Schema(query=Query, execution_context_class=CountedPlain).execute_sync(ITEM_QUERY)
    whole = strawberry.Schema(query=Query).execute_sync(ITEM_QUERY)
    assert fast.data == whole.data
    assert sorted((tuple(e.path), e.message) for e in fast.errors) == sorted((tuple(e.path), e.message) for e in whole.errors)
    assert fast.data["items"][0] == {"n": 1, "name": "a", "colour": "RED", "tags": [], "must": "x", "alias": 1, "__typename": "Item"}
    # the second has a tag (a list with items, "t" its own item), the others a value their type does not allow
    assert WholeWay.items == [ITEMS[1], "t", *ITEMS[2:]]


def test_an_item_with_a_resolver_among_its_fields_goes_the_whole_way():
    WholeWay.items = []
    strawberry.Schema(query=Query, execution_context_class=CountedPlain).execute_sync("{ items { n twice } }")
    assert WholeWay.items == ITEMS


CHECKS: list[int] = []


class NotTwo(BasePermission):
    message = "not for two"

    def has_permission(self, source, info, **kwargs) -> bool:
        CHECKS.append(source.n)
        return source.n != 2


@strawberry.type
class Guarded:
    n: int
    secret: str = strawberry.field(permission_classes=[NotTwo])


@strawberry.type
class GuardedQuery:
    @strawberry.field
    def guarded(self) -> list[Guarded | None]:
        return [Guarded(n=1, secret="a"), Guarded(n=2, secret="b")]


def test_a_field_with_a_permission_and_no_resolver_is_checked_once_as_the_whole_way_checks_it():
    answers = []
    for executor in (Plain, StrawberryGraphQLCoreExecutionContext):
        CHECKS.clear()
        result = strawberry.Schema(query=GuardedQuery, execution_context_class=executor).execute_sync("{ guarded { n secret } }")
        answers.append((result.data, [error.message for error in result.errors], list(CHECKS)))
    assert answers[0] == answers[1] == ({"guarded": [{"n": 1, "secret": "a"}, None]}, ["not for two"], [1, 2])


def test_a_schema_with_its_own_default_resolver_is_read_through_it():
    """Plain fields are read with getattr only where strawberry's default resolver is getattr."""
    from strawberry.schema.config import StrawberryConfig

    @strawberry.type
    class Row:
        n: int
        colour: Colour

    @strawberry.type
    class RowQuery:
        @strawberry.field
        def rows(self) -> list[Row]:
            return [Row(n=1, colour=Colour.RED), Row(n=2, colour=Colour.BLUE)]

    def tenfold(source, name):
        value = getattr(source, name)
        return value * 10 if name == "n" else value

    config = StrawberryConfig(default_resolver=tenfold)
    fast = strawberry.Schema(query=RowQuery, config=config, execution_context_class=Plain)
    result = fast.execute_sync("{ rows { n colour } }")
    assert result.errors is None
    assert result.data == {"rows": [{"n": 10, "colour": "RED"}, {"n": 20, "colour": "BLUE"}]}
    assert result.data == strawberry.Schema(query=RowQuery, config=config).execute_sync("{ rows { n colour } }").data
