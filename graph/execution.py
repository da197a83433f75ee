"""Plain leaf fields, completed without the executor's per-field machinery.

A long list of small objects (recordUsage's thousand results, each an index, a status and its
errors) spends most of its completion on graphql-core's steps around every field: the field's
definition looked up, its resolve info built, its arguments read, its value checked for being
awaitable and dispatched by type, for a value that is one attribute of a dataclass."""

from graphql import GraphQLEnumType, GraphQLList, GraphQLNonNull, GraphQLObjectType, GraphQLScalarType, Undefined

_PLANS: dict[tuple[GraphQLObjectType, str], tuple | None] = {}
"(object type, field name) -> (resolve, leaf type or None for a list, nullable), or None for any other field."


def _plan(parent_type: GraphQLObjectType, name: str) -> tuple | None:
    """How to read a plain field: one strawberry resolves as the source's attribute (no resolver,
    no extension, hence no permission) and without arguments, of a scalar or enum type (its leaf),
    or of a list type (None: only an empty list is answered here)."""
    field = parent_type.fields.get(name)  # __typename and the other meta fields are not among them
    if field is None or field.args or not getattr(field.resolve, "_is_default", False):
        return None
    leaf = field.type
    nullable = not isinstance(leaf, GraphQLNonNull)
    if not nullable:
        leaf = leaf.of_type
    if isinstance(leaf, GraphQLList):
        return field.resolve, None, nullable
    if not isinstance(leaf, GraphQLScalarType | GraphQLEnumType):
        return None
    return field.resolve, leaf, nullable


class PlainLeaves:
    """An executor mixin: a plain leaf field is read and serialized at once, and a plain list
    field that holds an empty list answers it. Anything unusual about its value (null where it may
    not be, an exception, a value its type does not represent, a list with items) goes
    the whole way instead, which reports it as it always has; reading an attribute again changes
    nothing. Without middleware only: a middleware sees every field."""

    def execute_field(self, parent_type, source, field_details_list, path, position_context):
        middleware = self.middleware_manager  # strawberry hands one over, empty without resolve hooks
        if middleware is None or not middleware.middlewares:
            key = (parent_type, field_details_list[0].node.name.value)
            try:
                plan = _PLANS[key]
            except KeyError:
                plan = _PLANS[key] = _plan(*key)
            if plan is not None:
                resolve, leaf, nullable = plan
                try:
                    value = resolve(source, None)  # strawberry's plain resolver takes no info
                    if value is None:
                        if nullable:
                            return None
                    elif leaf is None:
                        if type(value) is list and not value:
                            return []  # most results have no errors
                    elif not isinstance(value, Exception):
                        coerced = leaf.coerce_output_value(value)  # as complete_leaf_value does
                        if coerced is not None and coerced is not Undefined:
                            return coerced
                except Exception:  # noqa: BLE001 - the whole way below raises it as a field error
                    pass
        return super().execute_field(parent_type, source, field_details_list, path, position_context)
