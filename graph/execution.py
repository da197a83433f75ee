"""Executor shortcuts for long lists, each answering exactly what graphql-core's whole way answers.

A batch of a thousand events costs graphql-core most where it is generic. Its list variable is
coerced by walking the value and the type together, asking of every value which kind of type it
meets (CompiledListVariables). Its thousand results (each an index, a status and its errors)
spend most of their completion on the steps around every field: the field's definition looked
up, its resolve info built, its arguments read, its value checked for being awaitable and
dispatched by type, for a value that is one attribute of a dataclass (PlainLeaves)."""

from collections.abc import Callable
from operator import attrgetter
from typing import Any

from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLString,
    OperationDefinitionNode,
    Undefined,
    is_required_input_field,
    type_from_ast,
)
from graphql.language.parser import MAX_NESTING_DEPTH
from graphql.pyutils import is_iterable
from graphql.utilities.coerce_input_value import coerce_default_value
from strawberry.schema.schema_converter import CustomGraphQLEnumType, GraphQLCoreConverter

_PLANS: dict[tuple[GraphQLObjectType, str], tuple | None] = {}
"(object type, field name) -> (read, serialize or None for a list, nullable), or None for any other field."


def _plan(parent_type: GraphQLObjectType, name: str) -> tuple | None:
    """How to read a plain field: one strawberry resolves as the source's attribute (no resolver,
    no extension, hence no permission) and without arguments, of a scalar or enum type (its
    leaf's serializer), or of a list type (None: only an empty list is answered here). With
    strawberry's default resolver (getattr) the attribute is read at once, not through the
    two calls strawberry wraps it in."""
    field = parent_type.fields.get(name)  # __typename and the other meta fields are not among them
    if field is None or field.args:
        return None
    # Strawberry marks its resolve `_is_default` also for a field with extensions and no resolver
    # (permission_classes on an attribute): the definition says whether the field is basic.
    definition = field.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
    if not getattr(definition, "is_basic_field", False) or not getattr(field.resolve, "_is_default", False):
        return None
    if definition.default_resolver is getattr:
        read = attrgetter(definition.python_name)
    else:
        resolve = field.resolve
        read = lambda source: resolve(source, None)  # noqa: E731 - strawberry's plain resolver takes no info
    leaf = field.type
    nullable = not isinstance(leaf, GraphQLNonNull)
    if not nullable:
        leaf = leaf.of_type
    if isinstance(leaf, GraphQLList):
        return read, None, nullable
    if not isinstance(leaf, GraphQLScalarType | GraphQLEnumType):
        return None
    return read, _serializer(leaf), nullable


def _serializer(leaf: GraphQLScalarType | GraphQLEnumType) -> Callable[[Any], Any]:
    """The leaf's coerce_output_value; for one of strawberry's enums, its members' names looked
    up (what its coerce_output_value finds by comparing the values one by one)."""
    coerce = leaf.coerce_output_value
    wrapped = getattr(leaf, "wrapped_cls", None)
    if not isinstance(leaf, CustomGraphQLEnumType) or wrapped is None:
        return coerce
    names = {}
    for member in wrapped:
        for name, value in leaf.values.items():
            if member.value == value.value:
                names[member] = name
                break
    return lambda value: names[value] if type(value) is wrapped and value in names else coerce(value)


_WHOLE_WAY = object()
"What _read answers for a value it leaves to graphql-core's whole way."


def _planned(parent_type: GraphQLObjectType, name: str) -> tuple | None:
    key = (parent_type, name)
    try:
        return _PLANS[key]
    except KeyError:
        plan = _PLANS[key] = _plan(parent_type, name)
        return plan


def _typename(object_type: GraphQLObjectType) -> tuple:
    """__typename's plan on an object type: its name, which clients such as Apollo ask of every object."""
    name = object_type.name
    return (lambda _source: name), GraphQLString.coerce_output_value, False


def _read(plan: tuple, source: object) -> object:
    """A plain field's answer for `source`, or _WHOLE_WAY where anything about its value is unusual."""
    read, serialize, nullable = plan
    try:
        value = read(source)
        if value is None:
            if nullable:
                return None
        elif serialize is None:
            if type(value) is list and not value:
                return []  # most results have no errors
        elif not isinstance(value, Exception):
            coerced = serialize(value)  # as complete_leaf_value does
            if coerced is not None and coerced is not Undefined:
                return coerced
    except Exception:  # noqa: BLE001 - the whole way raises it as a field error
        pass
    return _WHOLE_WAY


class PlainLeaves:
    """An executor mixin: a plain leaf field is read and serialized at once, and a plain list
    field that holds an empty list answers it; an item of a list whose selected fields are all
    plain is answered at once as the object of their values. Anything unusual about a value (null
    where it may not be, an exception, a value its type does not represent, a list with items)
    sends its field, or its item, the whole way instead, which reports it as it always has;
    reading an attribute again changes nothing. Without middleware only: a middleware sees
    every field."""

    def _plain(self) -> bool:
        middleware = self.middleware_manager  # strawberry hands one over, empty without resolve hooks
        return middleware is None or not middleware.middlewares

    def execute_field(self, parent_type, source, field_details_list, path, position_context):
        if self._plain():
            plan = _planned(parent_type, field_details_list[0].node.name.value)
            if plan is not None:
                value = _read(plan, source)
                if value is not _WHOLE_WAY:
                    return value
        return super().execute_field(parent_type, source, field_details_list, path, position_context)

    def complete_list_item_value(self, item, complete_results, item_type, field_details_list, info, item_path,
                                 position_context):
        fields = self._item_fields(item_type, field_details_list)
        if fields is not None and item is not None and not isinstance(item, Exception):
            answer = {}
            for response_name, plan in fields:
                value = _read(plan, item)
                if value is _WHOLE_WAY:
                    break
                answer[response_name] = value
            else:
                complete_results.append(answer)
                return False  # not awaitable
        return super().complete_list_item_value(item, complete_results, item_type, field_details_list, info,
                                                item_path, position_context)

    def _item_fields(self, item_type, field_details_list) -> tuple | None:
        """(response name, plan) of each field selected on the list's items, where all are plain;
        kept per selection as collect_subfields keeps its own (the list kept alive with it)."""
        kept = self.__dict__.setdefault("_plain_items", {})
        key = (item_type, id(field_details_list))
        try:
            return kept[key][1]
        except KeyError:
            pass
        fields = self._plain_fields(item_type, field_details_list)
        kept[key] = (field_details_list, fields)
        return fields

    def _plain_fields(self, item_type, field_details_list) -> tuple | None:
        object_type = item_type.of_type if isinstance(item_type, GraphQLNonNull) else item_type
        # An is_type_of check (strawberry's, for a type with interfaces) belongs to the whole way.
        if not isinstance(object_type, GraphQLObjectType) or object_type.is_type_of is not None or not self._plain():
            return None
        grouped, deferred, directives = self.collect_subfields(object_type, field_details_list)
        if deferred or directives:  # @defer, or directives graphql-core reports
            return None
        fields = []
        for response_name, details in grouped.items():
            name = details[0].node.name.value
            plan = _typename(object_type) if name == "__typename" else _planned(object_type, name)
            if plan is None:
                return None
            fields.append((response_name, plan))
        return tuple(fields)


Coercer = Callable[[Any], Any]
"A compiled graphql-core coerce_input_value for one type: the coerced value, or Undefined where invalid."

_NAMED_COERCERS: dict[object, tuple[Coercer, int] | None] = {}
"Named input type -> (its coercer, the nesting depth of its values), or None where not compiled."


def _coercer(type_, seen: tuple = ()) -> tuple[Coercer, int] | None:
    """A coercer with coerce_input_value's rules for `type_`, and how deep its values nest as
    input_is_nested_too_deeply counts (a list or an input object's field is a level). None for a
    type that may nest without end (an input object that holds itself), a oneOf or one that is not
    an input type: those go the whole way. A named type's coercer is kept; the wrappers' are made
    anew, as type_from_ast makes the wrapper types anew for every request; a non-null scalar or
    enum is one coercer, not the non-null's around the leaf's (a UsageInput has six)."""
    if isinstance(type_, GraphQLNonNull) and isinstance(type_.of_type, GraphQLScalarType | GraphQLEnumType):
        return _leaf(type_.of_type, missing=Undefined), 0
    if isinstance(type_, GraphQLNonNull | GraphQLList):
        inner = _coercer(type_.of_type, seen)
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
        compiled = _coercer(field.type, (*seen, type_))
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
            compiled = _coercer(type_) if isinstance(listed, GraphQLList) else None
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
