"""A statement as CSV for finance tools: GET /statements/<statement id>.csv with the same API key."""

import csv
import io

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.billing.money import currency_exponent, format_amount
from app.errors import DomainError
from app.limits import admitted_caller
from app.runtime import Runtime
from app.services import settlement
from graph.errors import top_level
from graph.ids import split_global_id
from models import Party, Service

COLUMNS = ["number", "party", "period", "currency", "status", "kind", "service", "counterparty", "direction",
           "metric", "quantity", "events", "amount", "adjustment", "origin_period"]


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"errors": [{"message": message, "extensions": {"code": code}}]}, status_code=status)


def _statement_key(statement_id: str) -> tuple[int, str, str] | None:
    parts = split_global_id(statement_id)
    if parts is None or parts[0] != "Statement":
        return None
    party, _, rest = parts[1].partition(":")
    period, _, currency = rest.rpartition(":")
    return (int(party), period, currency) if party.isdigit() and len(party) <= 18 and period and currency else None


def render(value: settlement.Statement, names: dict[int, str], services: dict[int, str]) -> str:
    exponent = currency_exponent(value.currency)
    head = [value.number or "", value.party.name, value.period, value.currency, value.status]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for line in value.lines:
        writer.writerow([*head, "LINE", services[line.service], "consumers" if line.counterparty is None else names[line.counterparty],
                         line.direction.value, "", "", "", format_amount(line.amount, exponent),
                         "true" if line.adjustment else "false", line.origin_period or ""])
    for charge in value.charges:
        writer.writerow([*head, "CHARGE", services[charge.service_id], "", "", charge.metric, format(charge.quantity, "f"),
                         charge.events, format_amount(charge.amount, exponent), "false", ""])
    sums = value.totals
    for label, amount in (("RECEIVABLE", sums.receivable), ("PAYABLE", sums.payable), ("NET", sums.net)):
        writer.writerow([*head, label, "", "", "", "", "", "", format_amount(amount, exponent), "", ""])
    return out.getvalue()


async def statement_csv(request: Request) -> Response:
    rt: Runtime = request.app.state.rt
    caller = admitted_caller(request.scope)  # its budget spent by app.limits.Admission
    if caller is None:
        return _error(401, "UNAUTHENTICATED", "a valid API key is required")
    principal = caller.principal
    key = _statement_key(request.path_params["statement_id"])
    if key is None or principal.network_id is None:
        return _error(404, "NOT_FOUND", "statement not found")
    try:
        value = await settlement.statement(rt, principal, *key)
    except DomainError as refusal:  # a draft that cannot be worked out says why (FLOW_OVERFLOW, say)
        if refusal.code != "NOT_FOUND":
            return _error(422, refusal.code, top_level(refusal).message)
        value = None
    if value is None:
        return _error(404, "NOT_FOUND", "statement not found")
    async with rt.sessions() as session:
        ids = {line.counterparty for line in value.lines} - {None}
        names = dict((await session.execute(select(Party.id, Party.name).where(Party.id.in_(ids)))).all())
        service_ids = {line.service for line in value.lines} | {c.service_id for c in value.charges}
        services = dict((await session.execute(select(Service.id, Service.name).where(Service.id.in_(service_ids)))).all())
    filename = f"{value.number or f'draft-{value.period}'}-{value.party.id}.csv"
    return Response(render(value, names, services), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})
