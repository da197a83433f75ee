"""PlainLeaves: a plain field read at once, and a list item whose selected fields are all plain
answered at once as the object of their values.

What it saves: a batch's thousand results (each an index, a status and its errors) spend most of
graphql-core's completion on the steps around every field: the field's definition looked up, its
resolve info built, its arguments read, its value checked for being awaitable and dispatched by
type, for a value that is one attribute of a dataclass.

What it relies on: graphql-core's ExecutionContext.execute_field, complete_list_item_value and
collect_subfields (their signatures in graphql-core 3.3), strawberry's
GraphQLCoreConverter.DEFINITION_BACKREF on a field's extensions and the `_is_default` mark on its
default resolver, and CustomGraphQLEnumType.wrapped_cls. Tested on the versions pinned in
pyproject.toml; tests/graph/test_plain_leaves.py compares its answers with the whole way's."""

from collections.abc import Callable
from operator import attrgetter
from typing import Any

from graphql import GraphQLEnumType, GraphQLList, GraphQLNonNull, GraphQLObjectType, GraphQLScalarType, GraphQLString, Undefined
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
