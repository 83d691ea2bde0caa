"""The analyst's workspace: ``action-feed serve``, a server-rendered web application over a
member's feed store (search, seller dossiers, why a record was linked, why a delivery
has the form it has, sellers reported by several members), with TAXII 2.1 beside it
(:mod:`consumers.taxii_server`).

Every value shown came from members who are competitors: templates escape everything,
no page runs a script, and the Content-Security-Policy allows only this server's own
stylesheet. Off loopback a login is required (the password or token of a 0600 file):
pages take it once on a form and keep a session cookie (HttpOnly, SameSite=Strict);
TAXII clients send it with every request.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from broker.console import iso_time
from broker.match_tokens import MatchTokenKey
from consumers.dossier import (
    MAX_HOPS,
    MAX_INDICATORS,
    correlations,
    delivery_form,
    dossier,
    search,
)
from consumers.store import FeedStore
from consumers.taxii_server import TaxiiServer

_HERE = Path(__file__).parent
_COOKIE = "action_workspace"
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

Page = Callable[[Request], Awaitable[Response]]


class Workspace:
    def __init__(
        self,
        store_path: Path,
        member: str,
        *,
        secret: str | None,
        match_key: MatchTokenKey | None = None,
    ) -> None:
        self.store_path = store_path
        self.match_key = match_key
        self.member = member
        self.secret = secret
        self.taxii = TaxiiServer(store_path, member, secret=secret)
        self.templates = Jinja2Templates(directory=str(_HERE / "templates"))
        self.templates.env.filters["iso"] = iso_time
        self._store: FeedStore | None = None

    @property
    def store(self) -> FeedStore:
        # Opened by the first request. Pages run on the server's one event loop thread
        # and use the connection without awaiting in between, so they never interleave.
        if self._store is None:
            self._store = FeedStore(self.store_path, any_thread=True)
        return self._store

    def close(self) -> None:
        self.taxii.close()
        if self._store is not None:
            self._store.close()
            self._store = None

    def app(self) -> Starlette:
        pages: list[tuple[str, Page, list[str]]] = [
            ("/", self.home, ["GET"]),
            ("/search", self.search, ["GET", "POST"]),
            ("/seller/{source}/{indicator_id}", self.seller, ["GET"]),
            ("/delivery/{decision_id}", self.delivery, ["GET"]),
            ("/correlations", self.correlations, ["GET"]),
        ]
        routes: list[Route | Mount] = [
            Route(path, self._guarded(page), methods=methods) for path, page, methods in pages
        ]
        routes += [
            Route("/login", self.login, methods=["GET", "POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static"),
            *self.taxii.routes(),
        ]
        return Starlette(routes=routes)

    # --- login ----------------------------------------------------------------------------

    def _session_value(self) -> str:
        assert self.secret is not None
        return hmac.new(
            self.secret.encode(), b"action.workspace-session.v1", hashlib.sha256
        ).hexdigest()

    def _signed_in(self, request: Request) -> bool:
        if self.secret is None:
            return True
        cookie = request.cookies.get(_COOKIE, "")
        return hmac.compare_digest(cookie.encode(), self._session_value().encode())

    def _guarded(self, page: Page) -> Page:
        async def guarded(request: Request) -> Response:
            if not self._signed_in(request):
                return RedirectResponse("/login", status_code=303)
            response = await page(request)
            response.headers.update(_HEADERS)
            return response

        return guarded

    async def login(self, request: Request) -> Response:
        if self.secret is None:
            return RedirectResponse("/search", status_code=303)
        failed = False
        if request.method == "POST":
            form = await request.form()
            offered = str(form.get("password", ""))
            if hmac.compare_digest(offered.encode(), self.secret.encode()):
                signed_in = RedirectResponse("/search", status_code=303)
                signed_in.set_cookie(
                    _COOKIE,
                    self._session_value(),
                    httponly=True,
                    samesite="strict",
                    secure=request.url.scheme == "https",
                )
                return signed_in
            failed = True
        response = self._render(request, "login.html", failed=failed, status=401 if failed else 200)
        response.headers.update(_HEADERS)
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(_COOKIE)
        return response

    # --- pages ----------------------------------------------------------------------------

    def _render(
        self, request: Request, name: str, *, status: int = 200, **context: Any
    ) -> Response:
        context |= {"member": self.member, "login": self.secret is not None}
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    async def home(self, request: Request) -> Response:
        return RedirectResponse("/search", status_code=303)

    async def search(self, request: Request) -> Response:
        if request.method == "POST":
            form = await request.form()
            text = str(form.get("q", ""))
        else:
            text = request.query_params.get("q", "")
        queries = [line for line in text.splitlines() if line.strip()][:500]
        hits = search(self.store, queries, match_key=self.match_key) if queries else []
        return self._render(request, "search.html", text=text, queries=queries, hits=hits)

    async def seller(self, request: Request) -> Response:
        start = (request.path_params["source"], request.path_params["indicator_id"])
        found = dossier(self.store, start)
        if found is None:
            return self._render(request, "missing.html", what="indicator", status=404)
        decisions = self._decisions(found.timeline)
        return self._render(
            request,
            "seller.html",
            dossier=found,
            decisions=decisions,
            max_hops=MAX_HOPS,
            max_indicators=MAX_INDICATORS,
        )

    def _decisions(self, entries: Any) -> dict[tuple[str, str], str]:
        """The delivery (decision id) of each timeline entry's record."""
        out = {}
        for entry in entries:
            row = self.store.db.execute(
                "SELECT decision_id FROM deliveries WHERE source = ? AND record_id = ?",
                (entry.source, entry.record_id),
            ).fetchone()
            if row is not None:
                out[(entry.source, entry.record_id)] = row[0]
        return out

    async def delivery(self, request: Request) -> Response:
        form = delivery_form(self.store, request.path_params["decision_id"])
        if form is None:
            return self._render(request, "missing.html", what="delivery", status=404)
        return self._render(request, "delivery.html", form=form)

    async def correlations(self, request: Request) -> Response:
        query = request.query_params
        try:
            min_sources = max(2, min(int(query.get("min_sources", "2")), 20))
        except ValueError:
            min_sources = 2
        category = query.get("category", "")
        hss_only = query.get("hss") == "yes"
        since = query.get("since", "")
        sellers = correlations(
            self.store, min_sources=min_sources, category=category, hss_only=hss_only, since=since
        )
        return self._render(
            request,
            "correlations.html",
            sellers=sellers,
            min_sources=min_sources,
            category=category,
            hss_only=hss_only,
            since=since,
        )
