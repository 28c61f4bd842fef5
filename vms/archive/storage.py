"""What the service knows of object storage without loading its client.

The S3 client (`vms.archive.objects`, aiobotocore and botocore: about 9 MB) is imported only
by a process whose archives are in a bucket; the rest of the service names its errors and
types from here.
"""

from __future__ import annotations


class StorageError(Exception):
    """The object storage could not be reached or refused; the message says which."""


class NotStored(Exception):
    """The object is not in the bucket."""


class RangeNotSatisfiable(Exception):
    """The range asked for lies outside the object."""
