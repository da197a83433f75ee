"""Creating a network: the tenant, its owner party and the owner's first key."""

from dataclasses import dataclass

from app.auth import Principal, new_key
from app.billing.money import RoundingMode
from app.billing.periods import PeriodError, zone
from app.errors import AccessDenied, DomainError
from app.runtime import Runtime
from app.services import periods, text, validate
from models import ApiKey, Network, Party


@dataclass(frozen=True)
class CreatedNetwork:
    network: Network
    owner: Party
    owner_key: str


async def create_network(
    rt: Runtime,
    principal: Principal,
    *,
    name: str,
    currency: str,
    owner_name: str,
    rounding_mode: RoundingMode = RoundingMode.HALF_UP,
    first_period: str | None = None,
    time_zone: str | None = None,
) -> CreatedNetwork:
    """Only the deployment's operator may create networks. Raises DomainError with input paths."""
    if not principal.is_operator:
        raise AccessDenied("only the operator key may create networks")
    tz = time_zone or "UTC"
    values: dict[str, str] = {}

    def check_zone() -> None:
        text.check(tz, text.TIME_ZONE, "input", "timeZone")
        try:
            zone(tz)
        except PeriodError as error:
            raise DomainError.of(error.code, str(error), "input", "timeZone") from None

    validate.collect(
        lambda: values.__setitem__("name", validate.name(name, "input", "name")),
        lambda: values.__setitem__("owner_name", validate.name(owner_name, "input", "ownerName")),
        lambda: validate.currency(currency, "input", "currency"),
        check_zone,
        lambda: first_period is None or periods.parse_key(first_period, "input", "firstPeriod"),
    )
    network = Network(
        name=values["name"],
        currency=currency,
        rounding_mode=RoundingMode(rounding_mode).value,
        time_zone=tz,
        first_period="",
    )
    now_period = periods.current_period(network, rt.now())
    if first_period is not None and first_period > now_period:
        raise DomainError.of("INVALID", f"the first period may not lie after {now_period}", "input", "firstPeriod")
    network.first_period = first_period or now_period

    key, prefix, key_hash = new_key()
    async with rt.sessions.begin() as session:
        session.add(network)
        await session.flush()
        owner = Party(network_id=network.id, kind="OWNER", name=values["owner_name"])
        session.add(owner)
        await session.flush()
        session.add(ApiKey(network_id=network.id, party_id=owner.id, prefix=prefix, key_hash=key_hash))
    return CreatedNetwork(network, owner, key)
