"""The browser surface's error pages and security headers (the root application's)."""

from __future__ import annotations

import logging

import aiohttp_jinja2
from aiohttp import web
from aiohttp.typedefs import Handler

from vms.logs import log_unexpected

log = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self'; connect-src 'self'; font-src 'self'; manifest-src 'self'; "
    "form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}

_TITLES = {
    400: ("Bad request", "The browser sent something this page could not read."),
    403: ("Not allowed", "This action is not allowed. Reload the page and try again."),
    404: ("Page not found", "There is nothing at this address."),
    405: ("Not allowed", "This address does not accept that kind of request."),
    413: ("Too large", "The request was too large."),
    500: ("Something went wrong", "The server could not show this page. Try again in a moment."),
}


def routed_to_a_surface(request: web.Request) -> bool:
    """True if the request was routed into a sub-application, which answers for itself."""
    return len(request.match_info.apps) > 1


def error_page(request: web.Request, status: int) -> web.Response:
    """The error template for `status`, without any detail of what failed."""
    title, text = _TITLES.get(status, _TITLES[500] if status >= 500 else _TITLES[400])
    response = aiohttp_jinja2.render_template(
        "error.html",
        request,
        {"status": status, "title": title, "text": text, "user": None},
        status=status,
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _secure(response: web.StreamResponse, path: str) -> web.StreamResponse:
    for name, value in _HEADERS.items():
        response.headers.setdefault(name, value)
    if not path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


@web.middleware
async def page_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render error.html for failures of pages, and send every page the security headers."""
    if routed_to_a_surface(request):
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_page(request, exc.status)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    except Exception as exc:  # never a stack trace in the page; the log keeps it whole
        log_unexpected(log, f"{request.method} {request.path}", exc)
        response = error_page(request, 500)
    return _secure(response, request.path)


_LINK_TITLES = {
    403: (
        "This link does not work",
        "The archive link is incomplete or was changed. Open the archive again from the "
        "downloads page to get a working link.",
    ),
    410: (
        "This archive has expired",
        "Its file has been deleted. On the downloads page you can ask for the same recording "
        "again while the camera's server still keeps it.",
    ),
}


def prefers_html(accept: str) -> bool:
    """True if an Accept header ranks text/html above application/json (as browsers send)."""
    html = json = 0.0
    for part in accept.split(",")[:50]:
        media, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = max(0.0, min(1.0, float(value)))
                except ValueError:
                    quality = 0.0
        media = media.strip().lower()
        if media in ("text/html", "text/*", "*/*"):
            html = max(html, quality if media == "text/html" else quality * 0.999)
        if media in ("application/json", "application/*", "*/*"):
            json = max(json, quality if media == "application/json" else quality * 0.999)
    return html > json


def archive_link_page(request: web.Request, status: int) -> web.Response:
    """The HTML answer to a browser that opened an expired or invalid archive link."""
    title, text = _LINK_TITLES.get(status, _LINK_TITLES[403])
    response = aiohttp_jinja2.render_template(
        "error.html",
        request,
        {"status": status, "title": title, "text": text, "user": None, "tz_name": ""},
        status=status,
    )
    _secure(response, request.path)
    return response
