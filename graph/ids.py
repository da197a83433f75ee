"""Global ids: base64 of "Type:key", opaque to clients, checked for their type on the way in."""

import base64
import binascii
import functools

from app.errors import DomainError
from app.services import text


def to_global_id(type_name: str, key: object) -> str:
    return base64.b64encode(f"{type_name}:{key}".encode()).decode()


def split_global_id(value: str) -> tuple[str, str] | None:
    """(type, key) of a well-formed global id, or None."""
    if text.problem(value, text.GLOBAL_ID) is not None:
        return None
    try:
        decoded = base64.b64decode(value.encode(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    type_name, sep, key = decoded.partition(":")
    if not sep or not key:
        return None
    return type_name, key


def decode_id(value: str, type_name: str, *path: str) -> int:
    """The row id behind a global id of the given type; raises DomainError(NOT_FOUND) otherwise."""
    parts = split_global_id(value)
    if parts is None or parts[0] != type_name or not parts[1].isdigit() or len(parts[1]) > 18:
        raise DomainError.of("NOT_FOUND", f"not the id of a {type_name}", *path)
    return int(parts[1])


def decode_optional(value: str | None, type_name: str, *path: str) -> int | None:
    return None if value is None else decode_id(value, type_name, *path)


@functools.lru_cache(maxsize=1024)
def service_row_id(value: str) -> int | None:
    """The row id of a Service global id, None when it is not one (the item is then refused
    NOT_FOUND, like an unknown service). Remembered per id: the usage items of recordUsage,
    /usage.ndjson and import-usage name few services, many thousand times."""
    try:
        return decode_id(value, "Service")
    except DomainError:
        return None
