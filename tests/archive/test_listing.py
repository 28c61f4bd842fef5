"""Reading a media server's /list reply: the times the VMS asks /get for."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from vms.archive.mediaclient import MediaUnavailable, parse_spans


def _reply(*starts: str) -> bytes:
    return json.dumps([{"start": s, "duration": 60.0, "url": "x"} for s in starts]).encode()


def test_a_nanosecond_start_is_rounded_up_never_down() -> None:
    """MediaMTX lists nanoseconds; a start a hair before the recording would be "inside a gap"
    (404), so the microsecond the VMS asks for is the next one, never an earlier one."""
    spans = parse_spans(_reply("2026-12-01T10:00:00.123456001Z", "2026-12-01T10:05:00.123456000Z"))
    assert spans[0].start == datetime(2026, 12, 1, 10, 0, 0, 123457, tzinfo=UTC)
    assert spans[1].start == datetime(2026, 12, 1, 10, 5, 0, 123456, tzinfo=UTC)


def test_a_microsecond_start_is_asked_for_exactly() -> None:
    """The embedded server lists microseconds: the span is asked for from its first frame, so
    that frame is not lead-in."""
    (span,) = parse_spans(_reply("2026-12-01T10:00:00.5+01:00"))
    assert span.start == datetime(2026, 12, 1, 9, 0, 0, 500000, tzinfo=UTC)


@pytest.mark.parametrize("start", ["yesterday", "2026-12-01T10:00:00.123456789", 5])
def test_a_malformed_start_is_a_media_server_fault(start: object) -> None:
    """A start that is not an RFC 3339 time is the media server's fault (502), not ours."""
    with pytest.raises(MediaUnavailable):
        parse_spans(json.dumps([{"start": start, "duration": 1.0}]).encode())
