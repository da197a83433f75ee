"""Usage as NDJSON over HTTP: POST /usage.ndjson with the same API key as GraphQL.

The body holds one UsageInput-shaped JSON object per line (`idempotencyKey`, `serviceId`,
`consumerRef`, `metric`, `quantity`, `occurredAt`); blank lines are skipped and do not count. The
answer is NDJSON, one line per item in order: `{"index", "status", "eventId", "errors"}` with the
status ACCEPTED, DUPLICATE or REJECTED and errors as `{"field", "code", "message"}` (the field path
as recordUsage gives it, `["events", "<index>", "quantity"]`, the index counting the whole body),
then one closing line `{"accepted", "duplicates", "rejected"}`.

Same semantics as `recordUsage`: the same conversion of an item (app.ingest.items.item_from_row, shared with
the importer), validation, idempotency and access (app.ingest.record.record_usage), the same
body-size limit and the same rate limit per key (one request takes one token, spent by
app.limits.Admission). Items are recorded
in batches of at most MAX_BATCH, each committed before its results are streamed (on SQLite,
batches that arrive together share one commit), so a long body is answered as it is written; a line that is not a JSON object is
rejected on its own (`INVALID`, path `["events", "<index>"]`)."""

import json
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from app import observability
from app.errors import DomainError, Problem
from app.ingest.items import UsageItem, item_from_row, row_from_json, row_problem
from app.ingest.record import MAX_BATCH, record_usage
from app.ingest.results import STATUSES, ItemResult
from app.limits import LimitExceeded, admitted_caller, limit_body
from app.observability import USAGE_EVENTS
from app.runtime import Runtime
from graph.ids import service_row_id, to_global_id

log = logging.getLogger("shareflow.usage_ndjson")

MEDIA_TYPE = "application/x-ndjson"
BATCH = MAX_BATCH


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"errors": [{"message": message, "extensions": {"code": code}}]}, status_code=status)


def _problems(problems: list[Problem], index: int) -> list[dict]:
    """The use-case's problems with the batch's index replaced by the body's."""
    out = []
    for p in problems:
        path = list(p.path)
        if len(path) >= 2 and path[0] == "events":
            path[1] = str(index)
        out.append({"field": path or None, "code": p.code, "message": p.message})
    return out


def _internal() -> ItemResult:
    """A batch that failed by the server's fault: logged with the request's id, each of its items
    answered INTERNAL with that id (the response's x-request-id) and nothing of it written."""
    request_id = observability.request_id.get()
    log.error("unexpected error, request %s", request_id, exc_info=True)
    return ItemResult("REJECTED", problems=[Problem(("events", "0"), "INTERNAL", f"Unexpected error (request {request_id}).")])


def _line(index: int, status: str, event_id: int | None, errors: list[dict]) -> str:
    return json.dumps({
        "index": index, "status": status,
        "eventId": to_global_id("UsageEvent", event_id) if event_id is not None else None, "errors": errors,
    }, separators=(",", ":"))


async def _read(request: Request, limit: int) -> bytes:
    receive = limit_body(request.scope, request.receive, limit)
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def usage_ndjson(request: Request):
    rt: Runtime = request.app.state.rt
    caller = admitted_caller(request.scope)
    if caller is None:
        return _error(401, "UNAUTHENTICATED", "a valid API key is required")
    principal = caller.principal
    try:
        if principal.network_id is None:
            return _error(403, "FORBIDDEN", "the operator key may only create networks")
        body = await _read(request, rt.settings.max_body_bytes)
    except LimitExceeded as refusal:
        return JSONResponse(json.loads(refusal.body()), status_code=refusal.status,
                            headers={k.decode(): v.decode() for k, v in refusal.headers() if k != b"content-type"})
    lines = [line for line in body.split(b"\n") if line.strip()]

    async def answer():
        counts = dict.fromkeys(STATUSES, 0)
        for start in range(0, len(lines), BATCH):
            before = dict(counts)
            out: list[str | None] = [None] * min(BATCH, len(lines) - start)
            items: list[UsageItem] = []
            positions: list[int] = []
            for offset, raw in enumerate(lines[start : start + BATCH]):
                try:
                    text = raw.decode(json.detect_encoding(raw), "surrogatepass")  # as json.loads decodes bytes
                except UnicodeDecodeError:
                    text = ""
                row = row_from_json(text)
                if row is None:
                    index = start + offset
                    out[offset] = _line(index, "REJECTED", None, _problems([row_problem(index)], index))
                    counts["REJECTED"] += 1
                    continue
                items.append(item_from_row(row, service_row_id))
                positions.append(offset)
            if items:
                try:
                    recorded = (await record_usage(rt, principal, items)).results
                except DomainError as error:  # the batch as a whole
                    recorded = [ItemResult("REJECTED", problems=error.problems)] * len(items)
                except Exception:  # the server's fault, this batch's alone: masked, and the body goes on
                    recorded = [_internal()] * len(items)
                for offset, result in zip(positions, recorded):
                    index = start + offset
                    out[offset] = _line(index, result.status, result.event_id, _problems(result.problems, index))
                    counts[result.status] += 1
            for status, count in counts.items():
                if count > before[status]:
                    USAGE_EVENTS.labels(status=status).inc(count - before[status])
            yield "\n".join(out) + "\n"
        yield json.dumps({"accepted": counts["ACCEPTED"], "duplicates": counts["DUPLICATE"],
                          "rejected": counts["REJECTED"]}) + "\n"

    return StreamingResponse(answer(), media_type=MEDIA_TYPE)
