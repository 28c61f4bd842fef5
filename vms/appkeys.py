"""Every typed application key in one place, so wiring and handlers agree on names."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from aiohttp import web

from vms.archive.actions import ArchiveActions
from vms.archive.files import ArchiveFiles
from vms.archive.links import MediaLinks
from vms.archive.requests import ArchiveRequests
from vms.archive.worker import ArchiveWorker
from vms.auth import Authenticator
from vms.config import Config
from vms.keystore import Keystore
from vms.mediaserver.auth import KeySource
from vms.push.bus import RedisBus
from vms.push.hub import Hub
from vms.resources import Resources
from vms.sessions import Sessions
from vms.store import Store
from vms.throttle import Throttle
from vms.tls import Tls
from vms.urls import Urls
from vms.validation import ArchiveLinkSchema, DownloadBatchSchema, DownloadListSchema

if TYPE_CHECKING:  # redis-py is imported only with VMS_REDIS_URL
    from redis.asyncio import Redis

CONFIG = web.AppKey[Config]("config")
URLS = web.AppKey[Urls]("urls")
DB = web.AppKey[Store]("db")
KEYSTORE = web.AppKey[Keystore]("keystore")
# The service's own public keys, as a media server checks media tokens with them.
MEDIA_KEYS = web.AppKey[KeySource]("media_keys")
AUTH = web.AppKey[Authenticator]("auth")
SESSIONS = web.AppKey[Sessions]("sessions")
LINKS = web.AppKey[MediaLinks]("links")
FILES = web.AppKey[ArchiveFiles]("files")
RESOURCES = web.AppKey[Resources]("resources")
REQUESTS = web.AppKey[ArchiveRequests]("requests")
ACTIONS = web.AppKey[ArchiveActions]("actions")
WORKER = web.AppKey[ArchiveWorker]("worker")
LINK_SCHEMA = web.AppKey[ArchiveLinkSchema]("link_schema")
BATCH_SCHEMA = web.AppKey[DownloadBatchSchema]("batch_schema")
LIST_SCHEMA = web.AppKey[DownloadListSchema]("list_schema")
HUB = web.AppKey[Hub]("hub")
# Only with VMS_REDIS_URL: the client, and the hub's link to the other processes.
REDIS: web.AppKey[Redis] = web.AppKey("redis")
BUS = web.AppKey[RedisBus]("bus")
WSURL_THROTTLE = web.AppKey[Throttle]("wsurl_throttle")
# The embedded media server's listening sockets, when `serve` bound them before start-up.
MEDIA_SOCKETS = web.AppKey[list[socket.socket]]("media_sockets")
# The TLS certificate and contexts, when the service speaks TLS.
TLS = web.AppKey[Tls]("tls")
