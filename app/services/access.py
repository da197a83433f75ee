"""Who may see what (DESIGN §7), as SQL conditions so that every list filters in one statement.

Deny by default: a condition here is the only way a row reaches a caller, and a row it hides
does not exist for that caller.
"""

from sqlalchemy import ColumnElement, and_, false, or_, select, union

from app.auth import Principal
from models import Agreement, Party, Service, UsageLine


def services_taken_part_in(principal: Principal):
    """Ids of the services whose value chain the principal's party belongs to."""
    me = principal.party_id
    return union(
        select(Service.id).where(
            Service.network_id == principal.network_id,
            or_(Service.provider_id == me, Service.billed_by_id == me),
        ),
        select(Agreement.service_id).where(
            Agreement.network_id == principal.network_id,
            or_(Agreement.payer_id == me, Agreement.payee_id == me),
        ),
    )


def visible_services(principal: Principal) -> ColumnElement[bool]:
    if principal.network_id is None:
        return false()
    in_network = Service.network_id == principal.network_id
    if principal.is_owner:
        return in_network
    return and_(in_network, Service.id.in_(services_taken_part_in(principal)))


def consumer_data_services(principal: Principal) -> ColumnElement[bool]:
    """Services whose consumer-level data (usage, consumers, invoices) the principal may see."""
    if principal.network_id is None:
        return false()
    in_network = Service.network_id == principal.network_id
    if principal.is_owner:
        return in_network
    me = principal.party_id
    return and_(in_network, or_(Service.provider_id == me, Service.billed_by_id == me))


def may_record(principal: Principal, service: Service) -> bool:
    """The service's provider and the network's owner record and void its usage."""
    return principal.network_id == service.network_id and (
        principal.is_owner or principal.party_id == service.provider_id
    )


def recordable_services(principal: Principal) -> ColumnElement[bool]:
    """may_record as SQL: the services whose usage the principal records and voids."""
    if principal.network_id is None:
        return false()
    in_network = Service.network_id == principal.network_id
    if principal.is_owner:
        return in_network
    return and_(in_network, Service.provider_id == principal.party_id)


def visible_parties(principal: Principal) -> ColumnElement[bool]:
    """The owner sees its whole network; anyone else itself, the owner, the value chains of its
    services, and the consumers of the services it provides or bills."""
    if principal.network_id is None:
        return false()
    in_network = Party.network_id == principal.network_id
    if principal.is_owner:
        return in_network
    if principal.kind == "CONSUMER":
        return and_(in_network, Party.id == principal.party_id)
    me = principal.party_id
    chains = services_taken_part_in(principal)
    chain_members = union(
        select(Agreement.payer_id).where(Agreement.network_id == principal.network_id, Agreement.service_id.in_(chains)),
        select(Agreement.payee_id).where(Agreement.network_id == principal.network_id, Agreement.service_id.in_(chains)),
        select(Service.provider_id).where(Service.network_id == principal.network_id, Service.id.in_(chains)),
        select(Service.billed_by_id).where(Service.network_id == principal.network_id, Service.id.in_(chains)),
    )
    # A consumer is its merchant of record's customer, and known to the providers of what it used:
    # not to the provider of another of the merchant's services.
    provided = select(Service.id).where(Service.network_id == principal.network_id, Service.provider_id == me)
    customers_of_mine = select(UsageLine.consumer_id).where(
        UsageLine.network_id == principal.network_id, UsageLine.service_id.in_(provided)
    )
    return and_(
        in_network,
        or_(
            Party.id == principal.party_id,
            Party.kind == "OWNER",
            Party.id.in_(chain_members),
            and_(Party.kind == "CONSUMER", or_(Party.billing_party_id == me, Party.id.in_(customers_of_mine))),
        ),
    )


def visible_agreements(principal: Principal) -> ColumnElement[bool]:
    """Agreements of the value chains the principal takes part in."""
    if principal.network_id is None:
        return false()
    in_network = Agreement.network_id == principal.network_id
    if principal.is_owner:
        return in_network
    if principal.kind == "CONSUMER":
        return false()
    return and_(in_network, Agreement.service_id.in_(services_taken_part_in(principal)))


def sees_rule(principal: Principal, agreement: Agreement) -> bool:
    """An agreement's terms are for the owner, the payer and the payee only."""
    return principal.network_id == agreement.network_id and (
        principal.is_owner or principal.party_id in (agreement.payer_id, agreement.payee_id)
    )


def sees_created_at_of(principal: Principal, party: Party) -> bool:
    """When a consumer was created tells who first billed it: its own date is for the owner, its
    merchant of record and itself. Anyone else who sees it knows it by its own services' usage
    (usage_events.first_recorded), not whether it was another provider's customer before."""
    return party.kind != "CONSUMER" or principal.is_owner or principal.party_id in (party.id, party.billing_party_id)


def sees_keys_of(principal: Principal, party: Party) -> bool:
    return principal.network_id == party.network_id and (principal.is_owner or principal.party_id == party.id)

