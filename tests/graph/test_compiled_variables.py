"""graph/engine/list_variables.py: a list variable coerced by its compiled coercer is what
graphql-core's coerce_input_value makes of it, for every input type of the schema and for values
valid and not; and an operation run with it answers what the whole way answers, errors included."""

import json
import string
from decimal import Decimal

import strawberry
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    Undefined,
    is_required_input_field,
)
from graphql.utilities.coerce_input_value import coerce_input_value
from hypothesis import given, settings
from hypothesis import strategies as st
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from graph.engine.list_variables import CompiledListVariables, compiled_coercer
from graph.schema import schema
from tests.graph.test_record_usage import event

JUNK = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(),
                 st.text(alphabet=string.printable, max_size=6), st.just([]), st.just({}), st.just({"x": 1}))
VALID = {
    "String": st.text(max_size=6),
    "ID": st.one_of(st.text(max_size=6), st.integers()),
    "Int": st.integers(min_value=-(2**31), max_value=2**31 - 1),
    "Float": st.floats(allow_nan=False, allow_infinity=False),
    "Boolean": st.booleans(),
    "Decimal": st.sampled_from(["9.70", "-1", "1e3", "NaN", 7]),
    "DateTime": st.sampled_from(["2026-11-05T12:00:00Z", "2026-11-05T12:00:00", "2026-11-05T24:00:00Z", "20261105T1200Z"]),
}
"Values each scalar accepts."


def values(type_, junk: bool, depth: int = 0):
    """Values for `type_`: valid ones (`junk` False), or near its shape and beside it."""
    if depth > 6:
        return JUNK
    if isinstance(type_, GraphQLNonNull):
        return values(type_.of_type, junk, depth)
    if isinstance(type_, GraphQLList):
        item = values(type_.of_type, junk, depth + 1)
        return st.one_of(st.lists(item, max_size=3), item)  # a non-list is a list of one
    if isinstance(type_, GraphQLInputObjectType):
        fields = {name: values(field.type, junk, depth + 1) for name, field in type_.fields.items()}
        if not junk:
            required = {name: fields[name] for name, field in type_.fields.items() if is_required_input_field(field)}
            return st.fixed_dictionaries(required, optional={n: v for n, v in fields.items() if n not in required})
        complete = st.fixed_dictionaries(fields)
        return st.one_of(complete, st.fixed_dictionaries({}, optional=fields), complete.map(lambda d: {**d, "unknown": 1}), JUNK)
    if isinstance(type_, GraphQLEnumType):
        valid = st.sampled_from(list(type_.values))
    else:
        assert isinstance(type_, GraphQLScalarType)
        valid = VALID[type_.name]
    return st.one_of(valid, JUNK, st.sampled_from(["", "x", "2026-13-01T00:00:00Z"])) if junk else valid


LIST_TYPES = [GraphQLNonNull(GraphQLList(GraphQLNonNull(t))) for t in schema._schema.type_map.values()
              if isinstance(t, GraphQLInputObjectType)]
LIST_TYPES += [GraphQLList(t) for t in schema._schema.type_map.values() if isinstance(t, GraphQLScalarType | GraphQLEnumType)]


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(st.booleans().flatmap(lambda junk: st.sampled_from(LIST_TYPES).flatmap(
    lambda t: st.tuples(st.just(junk), st.just(t), values(t, junk)))))
def test_the_compiled_coercer_makes_what_graphql_core_makes_of_any_value(case):
    junk, type_, value = case
    coerce, _ = compiled_coercer(type_)
    coerced = coerce(value)
    # repr: Decimal("NaN") is not equal to itself
    assert repr(coerced) == repr(coerce_input_value(value, type_))
    assert junk or coerced is not Undefined


def test_a_null_where_a_scalar_may_not_be_null_is_refused_as_graphql_core_refuses_it():
    """Every non-null scalar field of UsageInput, null or missing in one event of a batch: the
    compiled coercer refuses the list as coerce_input_value does; nullable ones take null."""
    type_ = next(t for t in LIST_TYPES if isinstance(t, GraphQLNonNull) and t.of_type.of_type.of_type.name == "UsageInput")
    coerce, _ = compiled_coercer(type_)
    valid = event("U2VydmljZTox", "k")
    assert coerce([valid]) is not Undefined
    for name in valid:
        for broken in ({**valid, name: None}, {key: value for key, value in valid.items() if key != name}):
            try:
                expected = coerce_input_value([valid, broken], type_)
            except Exception:  # noqa: BLE001 - graphql-core refuses it
                expected = Undefined
            assert expected is Undefined and coerce([valid, broken]) is Undefined, name
    nullable = GraphQLList(schema._schema.type_map["String"])
    assert compiled_coercer(nullable)[0](["a", None]) == ["a", None] == coerce_input_value(["a", None], nullable)


def test_every_input_type_of_the_schema_compiles():
    assert all(compiled_coercer(t) is not None for t in LIST_TYPES)


@strawberry.input
class Leg:
    payee: str
    share: Decimal
    note: str | None = "none"
    tags: list[int] | None = None


@strawberry.input
class Tree:
    label: str
    children: list["Tree"] | None = None


@strawberry.type
class Query:
    @strawberry.field
    def legs(self, legs: list[Leg], scale: int = 1) -> str:
        return repr([(leg.payee, leg.share * scale, leg.note, leg.tags) for leg in legs])

    @strawberry.field
    def numbers(self, numbers: list[int | None] | None = None) -> str:
        return repr(numbers)

    @strawberry.field
    def tree(self, trees: list[Tree]) -> int:
        return len(trees)


class Compiled(CompiledListVariables, StrawberryGraphQLCoreExecutionContext):
    pass


DOCUMENT = """
query Legs($legs: [Leg!]!, $scale: Int) { legs(legs: $legs, scale: $scale) }
query Numbers($legs: [Int]) { numbers(numbers: $legs) }
query Trees($trees: [Tree!]!) { tree(trees: $trees) }
"""


def answer(executor, operation: str, variables: dict) -> tuple:
    result = strawberry.Schema(query=Query, execution_context_class=executor).execute_sync(
        DOCUMENT, variable_values=json.loads(json.dumps(variables)), operation_name=operation
    )
    return result.data, [(error.message, error.path) for error in result.errors or ()]


CASES = [
    ("Legs", {"legs": [{"payee": "a", "share": "0.5"}, {"payee": "b", "share": "1", "note": None, "tags": [1, 2]}]}),
    ("Legs", {"legs": {"payee": "a", "share": "2"}, "scale": 3}),  # a list of one
    ("Legs", {"legs": [{"payee": "a", "share": "0.5"}], "scale": "three"}),  # another variable is wrong
    ("Legs", {"legs": [{"payee": "a", "share": "half"}]}),  # not a decimal
    ("Legs", {"legs": [{"payee": "a"}]}),  # a required field missing
    ("Legs", {"legs": [{"payee": "a", "share": "1", "extra": 1}]}),  # a field the type does not have
    ("Legs", {"legs": [None]}),
    ("Legs", {"legs": None}),
    ("Legs", {}),
    ("Numbers", {"legs": [1, None, 3]}),  # same name, another operation, another type
    ("Numbers", {"legs": [1, "2"]}),
    (None, {"legs": []}),  # several operations and none named
    ("Trees", {"trees": [{"label": "a", "children": [{"label": "b"}]}]}),  # recursive: the whole way
]


def test_operations_answer_what_the_whole_way_answers():
    for operation, variables in CASES:
        assert answer(Compiled, operation, variables) == answer(StrawberryGraphQLCoreExecutionContext, operation, variables), (operation, variables)
    data, _ = answer(Compiled, "Legs", CASES[0][1])
    assert data == {"legs": "[('a', Decimal('0.5'), 'none', None), ('b', Decimal('1'), None, [1, 2])]"}
    assert answer(Compiled, "Legs", CASES[3][1])[1][0][0].startswith("Variable '$legs' has invalid value at [0].share:")
