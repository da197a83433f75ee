"""CompiledListVariables: a list variable coerced by a coercer compiled for its type.

What it saves: graphql-core coerces a list variable (recordUsage's thousand events) by walking the
value and the type together, asking of every value which kind of type it meets; a compiled coercer
asks once per type. graphql-core's build, given an empty list in its place, checks all else.

What it relies on: graphql-core's ExecutionContext.build signature and its `variable_values`, a
(sources, values) pair whose sources are named tuples with a `value` (graphql-core 3.3), and
MAX_NESTING_DEPTH of its parser. Tested on the versions pinned in pyproject.toml;
tests/graph/test_compiled_variables.py compares its answers with the whole way's."""

from collections.abc import Callable
from typing import Any

from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    OperationDefinitionNode,
    Undefined,
    is_required_input_field,
    type_from_ast,
)
from graphql.language.parser import MAX_NESTING_DEPTH
from graphql.pyutils import is_iterable
from graphql.utilities.coerce_input_value import coerce_default_value

Coercer = Callable[[Any], Any]
"A compiled graphql-core coerce_input_value for one type: the coerced value, or Undefined where invalid."

_NAMED_COERCERS: dict[object, tuple[Coercer, int] | None] = {}
"Named input type -> (its coercer, the nesting depth of its values), or None where not compiled."


def compiled_coercer(type_, seen: tuple = ()) -> tuple[Coercer, int] | None:
    """A coercer with coerce_input_value's rules for `type_`, and how deep its values nest as
    input_is_nested_too_deeply counts (a list or an input object's field is a level). None for a
    type that may nest without end (an input object that holds itself), a oneOf or one that is not
    an input type: those go the whole way. A named type's coercer is kept; the wrappers' are made
    anew, as type_from_ast makes the wrapper types anew for every request; a non-null scalar or
    enum is one coercer, not the non-null's around the leaf's (a UsageInput has six)."""
    if isinstance(type_, GraphQLNonNull) and isinstance(type_.of_type, GraphQLScalarType | GraphQLEnumType):
        return _leaf(type_.of_type, missing=Undefined), 0
    if isinstance(type_, GraphQLNonNull | GraphQLList):
        inner = compiled_coercer(type_.of_type, seen)
        if inner is None:
            return None
        return (_non_null if isinstance(type_, GraphQLNonNull) else _list_of)(*inner)
    if type_ in seen:
        return None
    try:
        return _NAMED_COERCERS[type_]
    except KeyError:
        pass
    if isinstance(type_, GraphQLInputObjectType):
        compiled = _input_object(type_, seen)
    elif isinstance(type_, GraphQLScalarType | GraphQLEnumType):
        compiled = _leaf(type_), 0
    else:  # not an input type: the whole way refuses the variable
        compiled = None
    _NAMED_COERCERS[type_] = compiled
    return compiled


def _non_null(coerce_inner: Coercer, depth: int) -> tuple[Coercer, int]:
    def non_null(value):
        return Undefined if value is None or value is Undefined else coerce_inner(value)

    return non_null, depth


def _list_of(coerce_item: Coercer, depth: int) -> tuple[Coercer, int]:
    def list_of(value):
        if value is None or value is Undefined:
            return None
        if not is_iterable(value):  # a list accepts a non-list value as a list of one
            item = coerce_item(value)
            return Undefined if item is Undefined else [item]
        coerced = []
        append = coerced.append
        for value_item in value:
            item = coerce_item(value_item)
            if item is Undefined:
                return Undefined
            append(item)
        return coerced

    return list_of, depth + 1


def _leaf(type_, missing: object = None) -> Coercer:
    """`missing`: the answer for null (None; Undefined, invalid, where the type is non-null)."""
    coerce = type_.coerce_input_value

    def leaf(value):
        if value is None or value is Undefined:
            return missing
        try:
            return coerce(value)
        except Exception:  # noqa: BLE001 - as coerce_input_value: invalid, and the whole way says why
            return Undefined

    return leaf


def _input_object(type_: GraphQLInputObjectType, seen: tuple) -> tuple[Coercer, int] | None:
    if type_.is_one_of:
        return None
    fields, depth = [], 0
    for name, field in type_.fields.items():
        compiled = compiled_coercer(field.type, (*seen, type_))
        if compiled is None:
            return None
        fields.append((name, field.out_name or name, is_required_input_field(field), field, compiled[0]))
        depth = max(depth, compiled[1])
    names = type_.fields.keys()
    out_type = None if type_.out_type is GraphQLInputObjectType.out_type else type_.out_type  # the default: no call

    def input_object(value):
        if value is None or value is Undefined:
            return None
        if not isinstance(value, dict):
            return Undefined
        if not names >= value.keys() and any(v is not Undefined for k, v in value.items() if k not in names):
            return Undefined  # a field the type does not have
        coerced = {}
        get = value.get
        for name, out_name, required, field, coerce in fields:
            field_value = get(name, Undefined)
            if field_value is Undefined:
                if required:
                    return Undefined
                default = coerce_default_value(field)
                if default is not Undefined:
                    coerced[out_name] = default
            else:
                field_value = coerce(field_value)
                if field_value is Undefined:
                    return Undefined
                coerced[out_name] = field_value
        return coerced if out_type is None else out_type(coerced)

    return input_object, depth + 1


def _operation(document, operation_name: str | None) -> OperationDefinitionNode | None:
    """The operation graphql-core's build picks, or None where it would refuse."""
    chosen = None
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            if operation_name is None:
                if chosen is not None:
                    return None
                chosen = definition
            elif definition.name and definition.name.value == operation_name:
                chosen = definition
    return chosen


class CompiledListVariables:
    """An executor mixin: each valid list variable is coerced by a coercer compiled for its type,
    and graphql-core's build, given an empty list in its place, checks all else. An invalid one,
    or any refusal at all, goes the whole way again with the variables as sent, so every error
    is graphql-core's own."""

    @classmethod
    def build(cls, schema, document, root_value=None, context_value=None, raw_variable_values=None,
              operation_name=None, *args, **kwargs):
        coerced = raw_variable_values and cls._coerce_lists(schema, document, operation_name, raw_variable_values)
        if coerced:
            placeholders = {**raw_variable_values, **{name: [] for name in coerced}}
            executor = super().build(schema, document, root_value, context_value, placeholders, operation_name,
                                     *args, **kwargs)
            if not isinstance(executor, list) and executor.operation is coerced.operation:
                sources, values = executor.variable_values
                for name, value in coerced.items():
                    sources[name] = sources[name]._replace(value=raw_variable_values[name])
                    values[name] = value
                return executor
        return super().build(schema, document, root_value, context_value, raw_variable_values, operation_name,
                             *args, **kwargs)

    @staticmethod
    def _coerce_lists(schema, document, operation_name, raw_variable_values) -> "_Coerced | None":
        operation = _operation(document, operation_name)
        if operation is None:
            return None
        coerced = _Coerced(operation)
        for definition in operation.variable_definitions or ():
            name = definition.variable.name.value
            value = raw_variable_values.get(name)
            if type(value) is not list:
                continue
            type_ = type_from_ast(schema, definition.type)
            listed = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
            compiled = compiled_coercer(type_) if isinstance(listed, GraphQLList) else None
            # A type nesting deeper than graphql-core allows: its own check says what it refuses.
            if compiled is not None and compiled[1] <= MAX_NESTING_DEPTH:
                value = compiled[0](value)
                if value is not Undefined:
                    coerced[name] = value
        return coerced


class _Coerced(dict):
    """Coerced list variables by name, and the operation they belong to."""

    def __init__(self, operation: OperationDefinitionNode) -> None:
        super().__init__()
        self.operation = operation
