"""Limits the HTTP face enforces before GraphQL sees a request: the size of a request body, and a
rate per API key or, for a request without a valid key, per client address (a token bucket,
in-process or shared by every gateway process through Redis), spent once per request by every
door (`Admission`).

Both answer a GraphQL-shaped JSON error (`{"errors": [{"message", "extensions": {"code"}}]}`) with
the HTTP status a proxy or client library understands: 413 `LIMIT_EXCEEDED`, 429 `RATE_LIMITED`
with a `Retry-After` header."""

import json
import logging
import math
import time

from app.auth import Caller, Principal, identify

log = logging.getLogger("shareflow.limits")


class LimitExceeded(Exception):
    """A limit refused the request; `response()` is what the client gets."""

    status = 400
    code = "LIMIT_EXCEEDED"
    retry_after: float | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = [(b"content-type", b"application/json")]
        if self.retry_after is not None:
            headers.append((b"retry-after", str(max(1, math.ceil(self.retry_after))).encode()))
        return headers

    def body(self) -> bytes:
        extensions: dict[str, object] = {"code": self.code}
        if self.retry_after is not None:
            extensions["retryAfterSeconds"] = round(self.retry_after, 3)
        return json.dumps({"errors": [{"message": self.message, "extensions": extensions}]}).encode()

    async def send(self, send) -> None:
        body = self.body()
        headers = [*self.headers(), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class BodyTooLarge(LimitExceeded):
    status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than {limit} bytes")


class RateLimited(LimitExceeded):
    status = 429
    code = "RATE_LIMITED"

    def __init__(self, retry_after: float) -> None:
        super().__init__("too many requests for this API key; retry later")
        self.retry_after = retry_after


def limit_body(scope, receive, limit: int):
    """`receive` that refuses a body above `limit` bytes: at once when Content-Length says so,
    else (chunked) as soon as the bytes read pass it. Raises BodyTooLarge before anything is sent."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                declared = 0
            if declared > limit:
                raise BodyTooLarge(limit)
            break
    received = 0

    async def limited():
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
        return message

    return limited


def bucket_of(principal: Principal) -> str:
    """What a budget belongs to: the key (a party's key id, or the one operator key)."""
    return "operator" if principal.key_id is None else f"key:{principal.key_id}"


def client_bucket(scope) -> str:
    """The budget of a request without a valid key: its client address (the proxy's client when
    the peer is a trusted proxy: ProxyHeadersMiddleware has rewritten `client` by then)."""
    client = scope.get("client")
    return f"addr:{client[0] if client else 'unknown'}"


CALLER = "shareflow.caller"
"The scope entry where Admission leaves the caller it identified (None: no valid key)."


def admitted_caller(scope) -> Caller | None:
    """The caller Admission identified for this request."""
    return scope[CALLER]


class Admission:
    """Every door but the probes (GraphQL over HTTP, the WebSocket handshake, /usage.ndjson, the
    statement downloads, the dashboard, /metrics) identifies its caller here, once per request, and
    spends one token: of the key's budget, or of the client address's when no valid key came (a
    WebSocket brings its key in `connection_init`, so its handshake counts against its address).
    The doors read the caller from the scope (`admitted_caller`)."""

    EXEMPT = ("/healthz", "/readyz")

    def __init__(self, app, rt, limiter: "RateLimiter | None") -> None:
        self.app = app
        self.rt = rt
        self.limiter = limiter

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or scope["path"] in self.EXEMPT:
            await self.app(scope, receive, send)
            return
        caller = None
        if kind == "http":
            authorization = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    authorization = value.decode("latin-1")
                    break
            rt = self.rt
            caller = await identify(rt.sessions, authorization, rt.settings.operator_key, rt.keys)
        scope[CALLER] = caller
        if self.limiter is not None:
            try:
                await self.limiter.check(client_bucket(scope) if caller is None else bucket_of(caller.principal))
            except RateLimited as refusal:
                if kind == "http":
                    await refusal.send(send)
                else:
                    await send({"type": "websocket.close", "code": 1008, "reason": refusal.message})
                return
        await self.app(scope, receive, send)


class RateLimiter:
    """A token bucket per API key: `per_minute` requests a minute, bursts up to a minute's worth.
    In-process; see RedisRateLimiter for the shared variant."""

    def __init__(self, per_minute: int, clock=time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    async def check(self, bucket: str) -> None:
        """Takes one token for `bucket`; raises RateLimited (with the wait) when none is left."""
        now = self.clock()
        tokens, then = self._buckets.get(bucket, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - then) * self.rate)
        if tokens < 1.0:
            self._buckets[bucket] = (tokens, now)
            raise RateLimited((1.0 - tokens) / self.rate)
        self._buckets[bucket] = (tokens - 1.0, now)
        if len(self._buckets) > 100_000:
            self._forget_full(now)

    def _forget_full(self, now: float) -> None:
        # A bucket that has refilled carries no information: drop those to bound the memory.
        self._buckets = {
            bucket: (tokens, then)
            for bucket, (tokens, then) in self._buckets.items()
            if tokens + (now - then) * self.rate < self.capacity
        }

    async def close(self) -> None:
        return None


# One atomic step of the bucket in Redis: refill by the time elapsed (Redis's own clock, so every
# gateway process agrees), take a token if there is one; the key expires once it would be full.
_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil then
  tokens = capacity
  at = now
end
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 1)
return {allowed, tostring(tokens)}
"""


class RedisRateLimiter(RateLimiter):
    """The same bucket kept in Redis, so that every gateway process draws on one budget per key.
    When Redis cannot be reached the request is let through (and logged): a limiter outage must
    not take the API down."""

    def __init__(self, per_minute: int, url: str, prefix: str = "shareflow:ratelimit:") -> None:
        super().__init__(per_minute)
        from redis.asyncio import Redis

        self.redis = Redis.from_url(url)
        self.prefix = prefix
        self._take = self.redis.register_script(_TAKE)

    async def check(self, bucket: str) -> None:
        from redis.exceptions import RedisError

        try:
            allowed, tokens = await self._take(keys=[self.prefix + bucket], args=[self.capacity, self.rate])
        except (RedisError, OSError) as error:
            log.warning("rate limit not checked, Redis failed: %s", error)
            return
        if not int(allowed):
            raise RateLimited((1.0 - float(tokens)) / self.rate)

    async def close(self) -> None:
        await self.redis.aclose()


def rate_limiter(per_minute: int, redis_url: str | None) -> RateLimiter | None:
    """The limiter the settings ask for: None when `per_minute` is 0 (no limit)."""
    if per_minute <= 0:
        return None
    if redis_url:
        return RedisRateLimiter(per_minute, redis_url)
    return RateLimiter(per_minute)
