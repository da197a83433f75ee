"""The tables. Every row belongs to one network and every query filters on network_id."""

from models.agreement import Agreement
from models.api_key import ApiKey
from models.network import Network
from models.party import Party
from models.period import ClosedPeriod
from models.service import PricePlan, Service
from models.settlement import FinalStatement, FinalStatementCharge, FinalStatementLine, LedgerEntry
from models.usage import ConsumerBlock, ServiceRevenue, ServiceUsage, UsageEvent, UsageLine

__all__ = [
    "Agreement",
    "ApiKey",
    "ClosedPeriod",
    "ConsumerBlock",
    "FinalStatement",
    "FinalStatementCharge",
    "FinalStatementLine",
    "LedgerEntry",
    "Network",
    "Party",
    "PricePlan",
    "Service",
    "ServiceRevenue",
    "ServiceUsage",
    "UsageEvent",
    "UsageLine",
]
