"""Request validation with marshmallow, reported in Laravel's 422 shape and wording."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any

from marshmallow import Schema, ValidationError, fields, validates_schema

from vms.dates import parse_date, utcnow
from vms.models import CLIENTS

_PRINTABLE = re.compile(r"^[\x20-\x7e]+\Z")


class ValidationFailed(Exception):
    """Input broke one or more rules; `errors` maps each field to its messages, in order."""

    def __init__(self, errors: Mapping[str, list[str]]) -> None:
        super().__init__("validation failed")
        self.errors = dict(errors)


def summary(errors: Mapping[str, list[str]]) -> str:
    """Laravel's top-level message: the first error, plus how many more there are."""
    messages = [m for field_messages in errors.values() for m in field_messages]
    first = messages[0] if messages else "The given data was invalid."
    extra = len(messages) - 1
    if extra <= 0:
        return first
    return f"{first} (and {extra} more error{'s' if extra > 1 else ''})"


def error_body(errors: Mapping[str, list[str]]) -> dict[str, Any]:
    """The 422 JSON body."""
    return {"message": summary(errors), "errors": dict(errors)}


def humanize_seconds(seconds: float) -> str:
    """3 hours, 90 minutes, 45 seconds: how a limit reads in a message."""
    for unit, size in (("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds:g} seconds"


def _required(label: str) -> str:
    return f"The {label} field is required."


class _Text(fields.Field):  # type: ignore[type-arg]
    """A single string value; lists (repeated parameters) and other types are refused."""

    def __init__(
        self, label: str, *, max_length: int = 255, required: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(
            required=required,
            error_messages={"required": _required(label), "null": _required(label)},
            **kwargs,
        )
        self.label = label
        self.max_length = max_length

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, str):
            raise ValidationError(f"The {self.label} field must be a string.")
        if len(value) > self.max_length:
            raise ValidationError(
                f"The {self.label} field must not be greater than {self.max_length} characters."
            )
        return value


class _Date(_Text):
    """A date in one of the contract's two spellings, as an aware UTC datetime.

    Dates without an offset are read in the time zone of the schema the field belongs to.
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        tz = getattr(self.parent, "tz", UTC)
        parsed = parse_date(value, tz) if isinstance(value, str) else None
        if parsed is None:
            raise ValidationError(f"The {self.label} field must be a valid date.")
        return parsed


class _Client(_Text):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if value not in CLIENTS:
            raise ValidationError(f"The selected {self.label} is invalid.")
        return str(value)


class _DeviceId(_Text):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = str(super()._deserialize(value, attr, data, **kwargs))
        if not _PRINTABLE.match(text):
            raise ValidationError(f"The {self.label} field format is invalid.")
        return text


class _Integer(_Text):
    """A whole number in a range, as query strings carry it."""

    def __init__(self, label: str, minimum: int, maximum: int, **kwargs: Any) -> None:
        super().__init__(label, **kwargs)
        self.minimum = minimum
        self.maximum = maximum

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not (
            isinstance(value, int)
            # [0-9], not \d: int() would also read "٣" or "３" as 3.
            or (isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,12}", value))
        ):
            raise ValidationError(f"The {self.label} field must be an integer.")
        number = int(value)
        if number < self.minimum:
            raise ValidationError(f"The {self.label} field must be at least {self.minimum}.")
        if number > self.maximum:
            raise ValidationError(
                f"The {self.label} field must not be greater than {self.maximum}."
            )
        return number


class _LaravelSchema(Schema):
    """A schema whose errors come back in declaration order, each field's messages as a list."""

    def validated(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Load `data` (empty strings count as missing) or raise ValidationFailed."""
        cleaned = {k: v for k, v in data.items() if not (isinstance(v, str) and v.strip() == "")}
        try:
            return dict(self.load(cleaned))
        except ValidationError as exc:
            messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
            raise ValidationFailed(self._ordered(messages)) from None

    def _ordered(self, messages: Mapping[str, Any]) -> dict[str, list[str]]:
        ordered: dict[str, list[str]] = {}
        for name, field in self.fields.items():
            key = field.data_key or name
            found = messages.get(key)
            if found:
                ordered[key] = [str(m) for m in (found if isinstance(found, list) else [found])]
        for key, found in messages.items():
            if key not in ordered and key != "_schema":
                ordered[key] = [str(m) for m in (found if isinstance(found, list) else [found])]
        return ordered


class DeviceHeadersSchema(_LaravelSchema):
    """The X-Client and X-UUID headers every client endpoint reads."""

    client = _Client("X-Client", data_key="X-Client")
    device = _DeviceId("X-UUID", data_key="X-UUID")


DEVICE_HEADERS = DeviceHeadersSchema()


class LoginSchema(_LaravelSchema):
    """POST /api/v1/token."""

    login = _Text("login")
    password = _Text("password", max_length=1024)
    client = _Client("X-Client", data_key="X-Client")
    device = _DeviceId("X-UUID", data_key="X-UUID")


class _RangeSchema(_LaravelSchema):
    """A range of footage (`from`, `to`) asked for by a device (`X-Client`, `X-UUID`)."""

    range_from = _Date("from", data_key="from")
    range_to = _Date("to", data_key="to")
    client = _Client("X-Client", data_key="X-Client")
    device = _DeviceId("X-UUID", data_key="X-UUID")

    def __init__(
        self, tz: tzinfo, max_range: float, clock: Callable[[], datetime] = utcnow
    ) -> None:
        super().__init__()
        self.tz = tz
        self._max_range = max_range
        self._clock = clock

    @validates_schema(skip_on_field_errors=False)
    def _check_range(self, data: dict[str, Any], **kwargs: Any) -> None:
        errors: dict[str, list[str]] = {}
        start, end = data.get("range_from"), data.get("range_to")
        if start is not None and start > self._clock():
            errors["from"] = ["The from field must be a date before or equal to now."]
        if start is not None and end is not None:
            if end <= start:
                errors["to"] = ["The to field must be a date after from."]
            elif end > self._clock():
                # Footage that is not recorded yet cannot be in the file.
                errors["to"] = ["The to field must be a date before or equal to now."]
            elif (end - start).total_seconds() > self._max_range:
                errors["to"] = [
                    "The to field must be a date no more than "
                    f"{humanize_seconds(self._max_range)} after from."
                ]
        if errors:
            raise ValidationError(errors)


class ArchiveLinkSchema(_RangeSchema):
    """GET /api/v1/cameras/{camera}/archive/link."""


MAX_BATCH = 50


class _CameraIds(fields.Field):  # type: ignore[type-arg]
    """`ids[]`: 1 to MAX_BATCH distinct camera ids; errors keyed `ids` or `ids.N` as Laravel's."""

    def __init__(self) -> None:
        super().__init__(
            required=True,
            error_messages={"required": _required("ids"), "null": _required("ids")},
        )

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[int]:
        if isinstance(value, str | int):
            value = [value]  # one `ids[]=` in a form reads as a single value
        if not isinstance(value, list):
            raise ValidationError("The ids field must be an array.")
        if not value:
            raise ValidationError(_required("ids"))
        if len(value) > MAX_BATCH:
            raise ValidationError(f"The ids field must not have more than {MAX_BATCH} items.")
        ids: list[int] = []
        problems: dict[str, list[str]] = {}
        for index, item in enumerate(value):
            number = _whole_number(item)
            if number is None:
                problems[f"ids.{index}"] = [f"The ids.{index} field must be an integer."]
            elif number in ids:
                problems[f"ids.{index}"] = [f"The ids.{index} field has a duplicate value."]
            ids.append(number if number is not None else -1)
        if problems:
            raise ValidationError(problems)
        return ids


def _whole_number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 < value < 10**12 else None
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,12}", value):
        return int(value)
    return None


class DownloadBatchSchema(_RangeSchema):
    """POST /api/v1/downloads: one range of several cameras."""

    ids = _CameraIds()

    def _ordered(self, messages: Mapping[str, Any]) -> dict[str, list[str]]:
        # marshmallow nests the per-item errors under `ids`; Laravel lists them as `ids.N`.
        flat: dict[str, Any] = {}
        for key, found in messages.items():
            if key == "ids" and isinstance(found, dict):
                flat.update(found)
            else:
                flat[key] = found
        return super()._ordered(flat)


DOWNLOAD_KINDS = ("link", "archive", "all")


class _Choice(_Text):
    """One of a fixed set of words."""

    def __init__(self, label: str, choices: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(label, **kwargs)
        self.choices = choices

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = str(super()._deserialize(value, attr, data, **kwargs))
        if text not in self.choices:
            raise ValidationError(f"The selected {self.label} is invalid.")
        return text


class DownloadListSchema(_LaravelSchema):
    """GET /api/v1/downloads query parameters (all optional)."""

    page = _Integer("page", 1, 1_000_000, required=False)
    per_page = _Integer("per page", 1, 100, required=False)
    created_from = _Date("from", data_key="from", required=False)
    created_to = _Date("to", data_key="to", required=False)
    kind = _Choice("kind", DOWNLOAD_KINDS, required=False)

    def __init__(self, tz: tzinfo) -> None:
        super().__init__()
        self.tz = tz


class _Pattern(_Text):
    """A string that must match `pattern` whole."""

    def __init__(self, label: str, pattern: str, **kwargs: Any) -> None:
        super().__init__(label, **kwargs)
        self.pattern = re.compile(pattern)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = str(super()._deserialize(value, attr, data, **kwargs))
        if not self.pattern.fullmatch(text):
            raise ValidationError(f"The {self.label} field format is invalid.")
        return text


class BroadcastAuthSchema(_LaravelSchema):
    """POST /broadcasting/auth: which socket wants which channel."""

    # ASCII digits: Python's \d also takes "١", which Pusher's socket ids never hold.
    socket_id = _Pattern("socket id", r"[0-9]{1,20}\.[0-9]{1,20}", max_length=41)
    channel_name = _Text("channel name")
