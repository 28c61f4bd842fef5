"""setup_pages(app): templates, static files, the error middleware and the page routes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp.typedefs import Handler

from vms import urls
from vms.web import actions, pages
from vms.web.errors import page_errors

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
STATIC = ROOT / "static"

# Names of the history page's form targets (built in templates with `route_url`).
REQUEST = "history-request"
CANCEL = "history-cancel"
DELETE = "history-delete"
AGAIN = "history-again"
POSTER = "history-poster"
MANIFEST = "history-manifest"


def _static_versions(root: Path) -> dict[str, str]:
    """A short content hash per static file, so a changed file gets a new URL."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:10]
        for path in sorted(root.iterdir())
        if path.is_file()
    }


def setup_pages(app: web.Application) -> None:
    """Register the browser pages on `app`: /login, /logout, /history and /static/."""
    versions = _static_versions(STATIC)

    def static_url(name: str) -> str:
        version = versions.get(name)
        return f"/static/{name}?v={version}" if version else f"/static/{name}"

    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["static_url"] = static_url

    def route_url(name: str, **parts: object) -> str:
        return str(app.router[name].url_for(**{k: str(v) for k, v in parts.items()}))

    env.globals["route_url"] = route_url
    app.middlewares.append(page_errors)
    app.router.add_get("/", pages.home)
    app.router.add_get("/login", pages.login_form, name=urls.LOGIN)
    app.router.add_post("/login", pages.login_submit)
    app.router.add_post("/logout", pages.logout)
    app.router.add_get("/history", pages.history, name=urls.HISTORY)
    app.router.add_get("/history/status", pages.history_status)
    app.router.add_post("/history/request", actions.request_archive, name=REQUEST)
    one = "/history/downloads/{id:[0-9]{1,12}}"
    app.router.add_post(f"{one}/cancel", actions.cancel_archive, name=CANCEL)
    app.router.add_post(f"{one}/delete", actions.delete_archive, name=DELETE)
    app.router.add_post(f"{one}/again", actions.ask_again, name=AGAIN)
    app.router.add_get(f"{one}/poster", pages.poster, name=POSTER)
    app.router.add_get(f"{one}/manifest", pages.manifest, name=MANIFEST)
    app.router.add_get("/static/{name:[A-Za-z0-9._-]+}", _static_handler(versions))


def _static_handler(versions: dict[str, str]) -> Handler:
    """Serve only the files that were in static/ at start; a matching `v` may be cached long."""

    async def static_file(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in versions:
            raise web.HTTPNotFound()
        fresh = request.query.get("v") == versions[name]
        cache = "public, max-age=31536000, immutable" if fresh else "no-cache"
        return web.FileResponse(STATIC / name, headers={"Cache-Control": cache})

    return static_file
