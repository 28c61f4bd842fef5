"""Audit lines: who did what to which camera or account, one `vms.audit` log line each.

Text logs read `audit login.ok login=alice client=web address=10.0.0.5`; JSON logs carry the
same fields under `audit`. Only names, ids, ranges and addresses go in: never a password, a
token or a signed URL (and every line still passes the redacting formatter).
"""

from __future__ import annotations

import logging
from datetime import datetime

from vms.models import Download

log = logging.getLogger("vms.audit")

Value = str | int | float | bool | datetime | None


def _text(value: Value) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value)
    return repr(text) if not text or any(c.isspace() or c in "\"'=" for c in text) else text


def audit(event: str, **fields: Value) -> None:
    """Log one audit line for `event` with `fields` (None values left out)."""
    present = {k: v for k, v in fields.items() if v is not None}
    data = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in present.items()}
    words = " ".join(f"{k}={_text(v)}" for k, v in present.items())
    log.info("audit %s %s", event, words, extra={"audit": {"event": event, **data}})


def audit_download(
    event: str, download: Download, user: str | None = None, **fields: Value
) -> None:
    """An audit line about one archive or link: its id, owner, camera and range."""
    audit(
        event,
        id=download.id,
        user=user or download.login or download.user_id,
        camera=download.camera_id,
        range_from=download.range_from,
        range_to=download.range_to,
        **fields,
    )
