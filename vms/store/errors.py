"""What the store says went wrong: domain errors, never HTTP errors."""

from __future__ import annotations


class StoreError(Exception):
    """A domain-level problem with stored data."""


class Conflict(StoreError):
    """The record already exists."""


class NotFound(StoreError):
    """No such record."""


# Each entry moves the schema one version up; never edit a released one, append a new one.
