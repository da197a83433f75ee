"""The schema: root types, scalars, extensions. `strawberry export-schema graph.schema:schema`.

It is built once per value of the engine switch (SHAREFLOW_ENGINE_OVERRIDES, graph/engine/): with
the overrides on, with their executor and recordUsage's resolver; off, as strawberry builds it.
`schema` is the one the process's settings ask for; the view takes `schema_for` its runtime's."""

import datetime
import decimal
from functools import cache

import strawberry
from graphql import GraphQLError
from strawberry.extensions import AddValidationRules, MaxAliasesLimiter, MaxTokensLimiter, ParserCache, QueryDepthLimiter, ValidationCache
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types

from app.settings import get_settings
from graph.extensions import AuthenticationGate, ErrorShaping, OperationMetrics, SubscriptionsOverWebSocket, log_errors
from graph import engine
from graph.engine import coerced_events
from graph.mutations.add_agreement import AgreementPayload, add_agreement
from graph.mutations.change_price_plan import change_price_plan
from graph.mutations.close_period import ClosePeriodPayload, close_period
from graph.mutations.create_network import CreateNetworkPayload, create_network
from graph.mutations.create_service import CreateServicePayload, create_service
from graph.mutations.end_agreement import end_agreement
from graph.mutations.issue_api_key import ApiKeyPayload, issue_api_key
from graph.mutations.onboard_partner import OnboardPartnerPayload, onboard_partner
from graph.mutations.revoke_api_key import revoke_api_key
from graph.mutations.record_usage import RecordUsagePayload, record_usage
from graph.mutations.void_usage import VoidUsagePayload, void_usage
from graph.queries import Query as PartiesQuery
from graph.scalars import DateTimeScalar, DecimalScalar
from graph.types import Agreement, ApiKey, Network, Party, Service
from graph.statements import Statement, StatementQuery
from graph.subscriptions import Subscription
from graph.usage import UsageEvent, UsageQuery

Query = merge_types("Query", (PartiesQuery, UsageQuery, StatementQuery))


@strawberry.type
class Mutation:
    create_network: CreateNetworkPayload = strawberry.mutation(
        resolver=create_network, description="Only with the operator key of the deployment."
    )
    onboard_partner: OnboardPartnerPayload = strawberry.mutation(resolver=onboard_partner)
    create_service: CreateServicePayload = strawberry.mutation(resolver=create_service)
    change_price_plan: CreateServicePayload = strawberry.mutation(resolver=change_price_plan)
    add_agreement: AgreementPayload = strawberry.mutation(resolver=add_agreement)
    end_agreement: AgreementPayload = strawberry.mutation(resolver=end_agreement)
    issue_api_key: ApiKeyPayload = strawberry.mutation(resolver=issue_api_key)
    revoke_api_key: ApiKeyPayload = strawberry.mutation(resolver=revoke_api_key)
    record_usage: RecordUsagePayload = strawberry.mutation(resolver=record_usage)
    void_usage: VoidUsagePayload = strawberry.mutation(resolver=void_usage)
    close_period: ClosePeriodPayload = strawberry.mutation(resolver=close_period)


# The limit rules are built once: the validation cache keys on the rule classes, and a limiter
# built per request would make fresh classes, so that no validation would ever hit the cache.
class _LimitContext:
    """A validation context whose reported errors carry the code LIMIT_EXCEEDED."""

    def __init__(self, context) -> None:
        self._context = context

    def __getattr__(self, name):
        return getattr(self._context, name)

    def report_error(self, error: GraphQLError) -> None:
        self._context.report_error(
            GraphQLError(error.message, error.nodes, extensions={**(error.extensions or {}), "code": "LIMIT_EXCEEDED"})
        )


def _coded(rule: type) -> type:
    """The limiter's rule, its refusals carrying a stable code (the limiters report through the
    validation context they are given)."""

    class Coded(rule):
        def __init__(self, context) -> None:
            super().__init__(_LimitContext(context))

    Coded.__name__ = rule.__name__
    return Coded


_LIMITS = [
    _coded(rule)
    for rule in (
        *QueryDepthLimiter(max_depth=12).validation_rules,
        *MaxAliasesLimiter(max_alias_count=30).validation_rules,
    )
]

class GatewaySchema(strawberry.Schema):
    process_errors = staticmethod(log_errors)  # strawberry's logs every error at ERROR with a traceback


EXTENSIONS = (
    AuthenticationGate,
    SubscriptionsOverWebSocket,
    ErrorShaping,
    OperationMetrics,
    lambda: AddValidationRules(_LIMITS),
    lambda: MaxTokensLimiter(max_token_count=5000),
    lambda: ParserCache(maxsize=512),  # the LRU lives at module level, shared by every request
    lambda: ValidationCache(maxsize=512),
)


def build(overrides: bool, extensions=EXTENSIONS) -> GatewaySchema:
    """The schema, with the engine's overrides or as plain strawberry."""
    built = GatewaySchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[Network, Party, Service, Agreement, ApiKey, UsageEvent, Statement],
        config=StrawberryConfig(scalar_map={decimal.Decimal: DecimalScalar, datetime.datetime: DateTimeScalar}),
        execution_context_class=engine.ShortcutExecutor if overrides else None,
        extensions=list(extensions),
    )
    if overrides:
        coerced_events.install(built)
    return built


@cache
def schema_for(overrides: bool) -> GatewaySchema:
    """The schema for a value of the switch, built once."""
    return build(overrides)


schema = schema_for(get_settings().engine_overrides)
