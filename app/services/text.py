"""The one check of every text the API, /usage.ndjson and the import take in.

A text is taken as it was sent or refused whole (INVALID with its field path), never repaired:
it must be encodable as UTF-8 (no lone surrogates, which JSON's "\\ud800" carries and the
database driver cannot write), hold no C0 or C1 control character and no DEL, not be blank, and
not be longer than its kind allows; a name, shown to people, also holds no bidirectional control
(which can make one name read as another). Light on purpose: the import's reader process uses it
before the database layer is imported (app/ingest/importer.py)."""

import re
from typing import NamedTuple

from app.errors import DomainError


class Kind(NamedTuple):
    """A kind of text input: its longest length in characters, and whether it is a name."""

    max_length: int
    name: bool = False


NAME = Kind(200, name=True)
"Networks, parties, services: shown to people."
REFERENCE = Kind(200)
"A partner's external reference."
CONSUMER_REFERENCE = Kind(200, name=True)
"A consumer's reference, which is its name too (usage creates the consumer with it)."
IDEMPOTENCY_KEY = Kind(200)
METRIC = Kind(64)
"As a usage item or a quote names it (a plan's own metrics are stricter: app.billing.pricing)."
PERIOD = Kind(32)
"A period key (\"2026-11\"): above its format's length, which refuses the rest with INVALID_PERIOD."
CURRENCY = Kind(32)
"An ISO 4217 code: above its format's length, which refuses the rest with INVALID_CURRENCY."
TIME_ZONE = Kind(64)
API_KEY = Kind(1024)
"As an Authorization value or a socket's connection_init carries it: a deployment's operator key may be long."
GLOBAL_ID = Kind(200)
"A global id or a cursor, refused as each convention says (NOT_FOUND, INVALID_CURSOR)."

_CONTROLS = "\x00-\x1f\x7f-\x9f"
_SURROGATES = "\ud800-\udfff"
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_REFUSED = re.compile(f"[{_CONTROLS}{_SURROGATES}]")
_REFUSED_IN_NAMES = re.compile(f"[{_CONTROLS}{_SURROGATES}{_BIDI}]")


def problem(value: str, kind: Kind) -> str | None:
    """What is wrong with `value` as a text of this kind (the message), or None.

    Cheap for the usual text (recordUsage checks three per event): str.isprintable is true only
    for text without control, format (the bidirectional controls among them) or surrogate
    characters, so only the other texts are searched."""
    if type(value) is not str:
        return "must be a string"
    if not 0 < len(value) <= kind.max_length:
        return f"must be 1 to {kind.max_length} characters"
    if value.isspace():
        return "must not be blank"
    if value.isprintable():
        return None
    found = (_REFUSED_IN_NAMES if kind.name else _REFUSED).search(value)
    if found is None:
        return None
    character = found.group()
    if "\ud800" <= character <= "\udfff":
        return "must be valid Unicode (a lone surrogate is not)"
    if kind.name and character > "\x9f":
        return "must not contain bidirectional control characters"
    return "must not contain control characters"


def check(value: str, kind: Kind, *path: str) -> str:
    """The value, unchanged, once problem() finds nothing; else DomainError(INVALID) on `path`."""
    message = problem(value, kind)
    if message is not None:
        raise DomainError.of("INVALID", message, *path)
    return value
