"""Every typed application key in one place, so wiring and handlers agree on names."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from vms.archive.jobs import ArchiveService
from vms.archive.links import LinkService
from vms.archive.mediaclient import MediaClient
from vms.auth import Authenticator, Throttle
from vms.config import Config
from vms.db import Database
from vms.keystore import Keystore
from vms.mediaserver.auth import StaticKeys
from vms.push.hub import Hub
from vms.validation import ArchiveLinkSchema, DownloadListSchema

CONFIG = web.AppKey[Config]("config")
DB = web.AppKey[Database]("db")
KEYSTORE = web.AppKey[Keystore]("keystore")
# The service's own public keys, as a media server checks media tokens with them.
MEDIA_KEYS = web.AppKey[StaticKeys]("media_keys")
AUTH = web.AppKey[Authenticator]("auth")
HTTP = web.AppKey[aiohttp.ClientSession]("http")
MEDIA = web.AppKey[MediaClient]("media")
LINKS = web.AppKey[LinkService]("links")
LINK_SCHEMA = web.AppKey[ArchiveLinkSchema]("link_schema")
LIST_SCHEMA = web.AppKey[DownloadListSchema]("list_schema")
# Called with a session id after it ends (closing its sockets, for one).
SESSION_ENDED = web.AppKey[list[Callable[[str], Awaitable[object]]]]("session_ended")
ARCHIVES = web.AppKey[ArchiveService]("archives")
HUB = web.AppKey[Hub]("hub")
WSURL_THROTTLE = web.AppKey[Throttle]("wsurl_throttle")
