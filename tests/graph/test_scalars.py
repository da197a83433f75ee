"""The DateTime scalar reads times with datetime.fromisoformat where that agrees with strawberry's
own (dateutil's isoparse): the same texts are accepted, as the same instants, and the same refused."""

import dateutil.parser
import pytest
from strawberry.exceptions import StrawberryInputCoercionError

from graph.scalars import DateTimeScalar

TEXTS = [
    "2026-11-20T10:00:00Z", "2026-11-20T10:00:00.123456789Z", "2026-11-20T10:00:00,5+01:00", "2026-11-20 10:00:00-05:30",
    "2026-11-20t10:00:00Z", "2026-11-20T10:00:00z", "2026-11-20T24:00:00Z", "2026-11-20T10:00:00+0100", "20261120T100000Z",
    "2026-11-20T10:00:00", "2026-11-20", "2026-324T10:00Z", "2026-11-20T10:00:00+01:60", "2026-11-20T10:00:00 +01:00",
    "2026-11-20T10:00:00.Z", "2026-11-20T10:00:00+01:00:30", "2026-02-30T10:00:00Z", "2026-11-20T10:00:00UTC",
    "2026-11-20T10:00:00.٣Z", "９９９９-12-31T23:59:59+14:00", "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_a_time_is_read_as_dateutil_reads_it(text):
    parse = DateTimeScalar.parse_value
    try:
        expected = dateutil.parser.isoparse(text)
    except ValueError:
        with pytest.raises(StrawberryInputCoercionError):
            parse(text)
    else:
        got = parse(text)
        assert (got, got.utcoffset()) == (expected, expected.utcoffset())
