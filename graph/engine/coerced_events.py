"""recordUsage resolved from graphql-core's coerced events, without strawberry's conversion.

What it saves: strawberry's own argument conversion walks each event through its generic dispatch
into a UsageInput (resolving each field's annotation again), for a field whose resolver has no
permission classes, extensions or handlers for it to apply: in an interleaved in-process A/B a
batch of 1,000 events took 120 ms with it, 53 ms without (December 2026, SQLite). Here the events
as graphql-core coerced them (keyed by the GraphQL field names, quantity and occurredAt already a
Decimal and a datetime) go to the use-case's items through the conversion the NDJSON endpoint and
the importer use too, as the field's own resolver does after strawberry's conversion.

What it relies on: the built graphql-core schema behind strawberry's (`Schema._schema`), whose
field's `resolve` is replaced, and graphql-core's resolver signature (root, info, **arguments).
Tested on the versions pinned in pyproject.toml; tests/graph/test_engine_switch.py compares the
answers with strawberry's conversion."""

from collections.abc import Awaitable

import strawberry
from graphql import GraphQLResolveInfo

from app.ingest.items import item_from_row
from graph.ids import service_row_id
from graph.mutations.record_usage import RecordUsagePayload, record_items


def resolve_coerced(_root, info: GraphQLResolveInfo, events: list[dict]) -> Awaitable[RecordUsagePayload]:
    """recordUsage's resolver in the executable schema: the coerced events as the use-case's items."""
    return record_items(info, [item_from_row(event, service_row_id) for event in events])


def install(schema: strawberry.Schema) -> None:
    """recordUsage resolved by resolve_coerced in `schema`; its types are unchanged."""
    schema._schema.mutation_type.fields["recordUsage"].resolve = resolve_coerced
