"""TAXII 2.1 over a member's feed store: discovery, one API root for the member, its one
collection (the feed, already filtered by the MOUs), objects, manifest, an object and its
versions. Read only. Served by ``action-feed serve``.

Paging: ``limit`` (at most 1,000) and ``next``, an opaque cursor over the collection's
monotonic sequence (never a timestamp), with the same filters repeated; ``added_after``,
``match[id]``, ``match[type]``, ``match[version]`` (``last`` by default, ``first``,
``all`` or timestamps). ``X-TAXII-Date-Added-First`` and ``-Last`` head every page.
Authentication, when the server has a secret: HTTP Basic (user = the member id) or
Bearer, both checked in constant time.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from consumers.stix_collection import StixCollection, StoredObject
from consumers.store import FeedStore

TAXII_MEDIA_TYPE = "application/taxii+json;version=2.1"
STIX_MEDIA_TYPE = "application/stix+json;version=2.1"
_NAMESPACE = uuid.UUID("0f7cbe53-1a7c-4b55-9d2e-8a1d4bd0c0a1")
_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")

Handler = Callable[[Request], Awaitable[Response]]


class TaxiiError(Exception):
    """A request TAXII answers with an error message (its status and title)."""

    def __init__(self, status: int, title: str, description: str = "") -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.description = description


def collection_id(member: str) -> str:
    """The stable id of ``member``'s feed collection."""
    return str(uuid.uuid5(_NAMESPACE, f"feed|{member}"))


def _taxii(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False),
        status_code=status,
        media_type=TAXII_MEDIA_TYPE,
        headers=headers,
    )


def _timestamp(ms: int) -> str:
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _parse_timestamp(text: str, name: str) -> int:
    if not _STAMP.match(text):
        raise TaxiiError(400, f"{name} must be a timestamp such as 2026-12-01T13:37:18.759Z")
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(moment.timestamp() * 1000)


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": seq}).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> int:
    try:
        padded = text + "=" * (-len(text) % 4)
        after = json.loads(base64.urlsafe_b64decode(padded))["after"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise TaxiiError(400, "next is not a cursor this server gave") from None
    if not isinstance(after, int) or after < 0:
        raise TaxiiError(400, "next is not a cursor this server gave")
    return after


class TaxiiServer:
    """The TAXII routes of one member's collection; ``secret`` (a password or token),
    when set, is required of every request."""

    def __init__(
        self, store_path: Path, member: str, *, secret: str | None, prefix: str = ""
    ) -> None:
        self.store_path = store_path
        self._collection: StixCollection | None = None
        self.member = member
        self.secret = secret
        self.prefix = prefix.rstrip("/")
        self.collection_id = collection_id(member)
        # The store is opened by the first request. Requests run on the server's one
        # event loop thread and use it without awaiting in between: they never interleave.

    @property
    def collection(self) -> StixCollection:
        if self._collection is None:
            self._collection = StixCollection(FeedStore(self.store_path, any_thread=True))
        return self._collection

    def close(self) -> None:
        if self._collection is not None:
            self._collection.store.close()
            self._collection = None

    def routes(self) -> list[Route]:
        root = f"/taxii2/{self.member}"
        collection = f"{root}/collections/{self.collection_id}"
        handlers: list[tuple[str, Handler]] = [
            ("/taxii2/", self.discovery),
            (f"{root}/", self.api_root),
            (f"{root}/collections/", self.collections),
            (f"{collection}/", self.one_collection),
            (f"{collection}/objects/", self.objects),
            (f"{collection}/manifest/", self.manifest),
            (f"{collection}/objects/{{object_id}}/", self.one_object),
            (f"{collection}/objects/{{object_id}}/versions/", self.object_versions),
        ]
        return [Route(path, self._guarded(handler), methods=["GET"]) for path, handler in handlers]

    def app(self) -> Starlette:
        return Starlette(routes=self.routes())

    # --- the checks every request passes -----------------------------------------------

    def _guarded(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            try:
                self._authenticate(request)
                _accepts(request)
                return await handler(request)
            except TaxiiError as exc:
                headers = {"WWW-Authenticate": 'Basic realm="taxii"'} if exc.status == 401 else None
                body = {"title": exc.title, "description": exc.description}
                return _taxii(body, exc.status, headers)

        return guarded

    def _authenticate(self, request: Request) -> None:
        if self.secret is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        offered = ""
        if scheme.lower() == "bearer":
            offered = value.strip()
        elif scheme.lower() == "basic":
            try:
                user, _, offered = base64.b64decode(value).decode().partition(":")
            except (ValueError, binascii.Error):
                user = ""
            if not hmac.compare_digest(user.encode(), self.member.encode()):
                offered = ""
        if not offered or not hmac.compare_digest(offered.encode(), self.secret.encode()):
            raise TaxiiError(401, "authentication required: HTTP Basic or Bearer")

    # --- discovery ------------------------------------------------------------------------

    async def discovery(self, request: Request) -> Response:
        # Absolute URLs, as the specification asks, on the address the client used.
        root = f"{str(request.base_url).rstrip('/')}{self.prefix}/taxii2/{self.member}/"
        return _taxii(
            {
                "title": "ACTION consortium broker",
                "description": f"{self.member}'s feed, as its MOUs let it receive records",
                "default": root,
                "api_roots": [root],
            }
        )

    async def api_root(self, request: Request) -> Response:
        return _taxii(
            {
                "title": f"{self.member}'s feed",
                "versions": [TAXII_MEDIA_TYPE],
                "max_content_length": 0,  # read only: nothing may be added
            }
        )

    def _collection_info(self) -> dict[str, Any]:
        return {
            "id": self.collection_id,
            "title": f"{self.member} feed",
            "description": "every record the MOUs delivered to this member, as STIX 2.1",
            "can_read": True,
            "can_write": False,
            "media_types": [STIX_MEDIA_TYPE],
        }

    async def collections(self, request: Request) -> Response:
        return _taxii({"collections": [self._collection_info()]})

    async def one_collection(self, request: Request) -> Response:
        return _taxii(self._collection_info())

    # --- objects --------------------------------------------------------------------------

    def _page(self, request: Request, *, object_id: str | None = None) -> Any:
        query = request.query_params
        limit = query.get("limit")
        if limit is not None and not limit.isdigit():
            raise TaxiiError(400, "limit must be a positive whole number")
        added_after = query.get("added_after")
        versions = _listed(query.getlist("match[version]"))
        self.collection.refresh()
        return self.collection.page(
            after_seq=decode_cursor(query["next"]) if query.get("next") else 0,
            limit=int(limit) if limit else 1000,
            added_after_ms=_parse_timestamp(added_after, "added_after") if added_after else None,
            ids=[object_id] if object_id else _listed(query.getlist("match[id]")),
            types=_listed(query.getlist("match[type]")),
            versions=versions or ["last"],
        )

    async def objects(self, request: Request) -> Response:
        page = self._page(request)
        return self._envelope(page.objects, page.more)

    async def one_object(self, request: Request) -> Response:
        object_id = request.path_params["object_id"]
        page = self._page(request, object_id=object_id)
        if not page.objects and not request.query_params.get("next"):
            raise TaxiiError(404, f"no object {object_id} in this collection")
        return self._envelope(page.objects, page.more)

    def _envelope(self, objects: list[StoredObject], more: bool) -> Response:
        body: dict[str, Any] = {"more": more}
        if objects:
            body["objects"] = [o.object for o in objects]
            if more:
                body["next"] = encode_cursor(objects[-1].seq)
        return _taxii(body, headers=_added_headers(objects))

    async def manifest(self, request: Request) -> Response:
        page = self._page(request)
        body: dict[str, Any] = {"more": page.more}
        if page.objects:
            body["objects"] = [
                {
                    "id": o.id,
                    "date_added": _timestamp(o.added_ms),
                    "version": o.version,
                    "media_type": STIX_MEDIA_TYPE,
                }
                for o in page.objects
            ]
            if page.more:
                body["next"] = encode_cursor(page.objects[-1].seq)
        return _taxii(body, headers=_added_headers(page.objects))

    async def object_versions(self, request: Request) -> Response:
        object_id = request.path_params["object_id"]
        self.collection.refresh()
        found = self.collection.versions(object_id)
        if not found:
            raise TaxiiError(404, f"no object {object_id} in this collection")
        return _taxii({"more": False, "versions": [o.version for o in found]})


#: Most values one match[...] filter may list (each becomes an SQL parameter).
MAX_MATCH_VALUES = 100


def _listed(values: list[str]) -> list[str]:
    listed = [v for value in values for v in value.split(",") if v]
    if len(listed) > MAX_MATCH_VALUES:
        raise TaxiiError(400, f"a match filter may list at most {MAX_MATCH_VALUES} values")
    return listed


def _accepts(request: Request) -> None:
    accept = request.headers.get("accept", "*/*").replace(" ", "").lower()
    if not any(
        kind in ("*/*", "application/*", "application/taxii+json")
        or kind.startswith("application/taxii+json;version=2.1")
        for kind in accept.split(",")
    ):
        raise TaxiiError(406, f"this server answers with {TAXII_MEDIA_TYPE} only")


def _added_headers(objects: list[StoredObject]) -> dict[str, str]:
    if not objects:
        return {}
    added = [o.added_ms for o in objects]
    return {
        "X-TAXII-Date-Added-First": _timestamp(min(added)),
        "X-TAXII-Date-Added-Last": _timestamp(max(added)),
    }
