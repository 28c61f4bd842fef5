"""Every URL the service hands out, built in one place from named routes and the public URL."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from vms.dates import format_rfc3339

# Route names (aiohttp named routes) that URLs are built from.
LOGIN_API = "api-login"
DOWNLOADS = "downloads"
ARCHIVE_FILE = "archive-file"
# pusher-js is given this as `wsPath`; it appends `/app/{key}` itself.
WS_PATH = "/ws"
LOGIN = "login"
HISTORY = "history"


@dataclass(frozen=True)
class SocketAddress:
    """Where Pusher clients connect, as `GET /api/v1/wsurl` tells them."""

    url: str
    host: str
    port: int
    path: str
    secure: bool


class Urls:
    """Absolute and relative URLs of the service's own routes."""

    def __init__(self, base_url: str, routes: Mapping[str, web.AbstractResource]) -> None:
        self.base_url = base_url.rstrip("/")
        self._routes = routes

    def path(self, name: str, query: Mapping[str, str] | None = None, **parts: str) -> str:
        """The path (and query) of a named route, e.g. for a redirect."""
        url = self._routes[name].url_for(**parts)
        return str(url.with_query(dict(query)) if query else url)

    def absolute(self, name: str, query: Mapping[str, str] | None = None, **parts: str) -> str:
        """A named route under the public URL."""
        return f"{self.base_url}{self.path(name, query, **parts)}"

    def archive_file(self, download_id: int, expires: int) -> str:
        """The unsigned download URL of an archive file (the signature is added to it)."""
        return self.absolute(ARCHIVE_FILE, {"expires": str(expires)}, id=str(int(download_id)))

    def socket(self) -> SocketAddress:
        """The WebSocket base clients give to pusher-js (`wsHost`, `wsPort`, `wsPath`)."""
        base = urlsplit(self.base_url)
        secure = base.scheme == "https"
        host = base.hostname or "127.0.0.1"
        port = base.port or (443 if secure else 80)
        scheme = "wss" if secure else "ws"
        return SocketAddress(f"{scheme}://{host}:{port}{WS_PATH}", host, port, WS_PATH, secure)


def media_get(
    server_url: str,
    path: str,
    start: datetime,
    seconds: float,
    token: str | None = None,
    fmt: str = "mp4",
) -> str:
    """A media server's /get address (MediaMTX playback API), with a media token if given."""
    params = {
        "path": path,
        "start": format_rfc3339(start),
        "duration": f"{seconds:.6f}".rstrip("0").rstrip("."),
        "format": fmt,
    }
    if token is not None:
        params["jwt"] = token
    return f"{server_url.rstrip('/')}/get?{urlencode(params)}"


def media_list(server_url: str) -> str:
    """A media server's /list address; its query is given by the caller."""
    return f"{server_url.rstrip('/')}/list"
