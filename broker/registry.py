"""A read-only, Schema Registry-compatible HTTP endpoint serving the catalog.

It answers the subset of Confluent's REST API that the serializers, kcat and Kafka UIs
use to read schemas, so standard tools decode this project's streams with no custom
code. Subjects are the records' full names (Confluent's RecordNameStrategy), because one
inbound topic carries several event types. Nothing can be registered: schemas change
only through ``schemas/manifest.json`` in a reviewed commit.

Reusable inside other services: ``RegistryServer(catalog).start()`` serves from a thread.
"""

from __future__ import annotations

import json
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from broker.catalog import SchemaCatalog
from broker.errors import SchemaError, UnknownSchemaError

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"

# Confluent's error codes, which its clients map to exceptions.
SUBJECT_NOT_FOUND = 40401
VERSION_NOT_FOUND = 40402
SCHEMA_NOT_FOUND = 40403
INVALID_VERSION = 42202

_ROUTES = [
    (re.compile(r"^/schemas/ids/(\d+)$"), "schema_by_id"),
    (re.compile(r"^/schemas/ids/(\d+)/schema$"), "raw_schema_by_id"),
    (re.compile(r"^/schemas/ids/(\d+)/versions$"), "versions_of_id"),
    (re.compile(r"^/subjects$"), "subjects"),
    (re.compile(r"^/subjects/([^/]+)/versions$"), "subject_versions"),
    (re.compile(r"^/subjects/([^/]+)/versions/([^/]+)$"), "subject_version"),
    (re.compile(r"^/subjects/([^/]+)/versions/([^/]+)/schema$"), "subject_version_schema"),
    (re.compile(r"^/config$"), "config"),
    (re.compile(r"^/$"), "root"),
]


class RegistryError(Exception):
    def __init__(self, status: HTTPStatus, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class RegistryApi:
    """The routes as plain functions of the catalog: testable without HTTP."""

    def __init__(self, catalog: SchemaCatalog) -> None:
        self.catalog = catalog

    def handle(self, path: str) -> Any:
        path = path.split("?", 1)[0].rstrip("/") or "/"
        for pattern, name in _ROUTES:
            match = pattern.match(path)
            if match:
                return getattr(self, name)(*match.groups())
        raise RegistryError(HTTPStatus.NOT_FOUND, 404, f"HTTP 404 Not Found: {path}")

    def _by_id(self, schema_id: str) -> Any:
        try:
            return self.catalog.by_id(int(schema_id))
        except UnknownSchemaError:
            raise RegistryError(
                HTTPStatus.NOT_FOUND, SCHEMA_NOT_FOUND, f"Schema {schema_id} not found"
            ) from None

    def schema_by_id(self, schema_id: str) -> Any:
        return {"schema": self._by_id(schema_id).schema_text}

    def raw_schema_by_id(self, schema_id: str) -> Any:
        return self._by_id(schema_id).schema

    def versions_of_id(self, schema_id: str) -> Any:
        sv = self._by_id(schema_id)
        return [{"subject": sv.subject, "version": sv.version}]

    def subjects(self) -> Any:
        return sorted(self.catalog.latest(t).subject for t in self.catalog.type_names)

    def _subject(self, subject: str) -> Any:
        try:
            return self.catalog.by_subject(subject)
        except SchemaError:
            raise RegistryError(
                HTTPStatus.NOT_FOUND, SUBJECT_NOT_FOUND, f"Subject '{subject}' not found."
            ) from None

    def subject_versions(self, subject: str) -> Any:
        return [sv.version for sv in self._subject(subject)]

    def subject_version(self, subject: str, version: str) -> Any:
        versions = self._subject(subject)
        if version in ("latest", "-1"):
            sv = versions[-1]
        else:
            if not version.isdigit() or int(version) < 1:
                raise RegistryError(
                    HTTPStatus.UNPROCESSABLE_ENTITY,
                    INVALID_VERSION,
                    f"The specified version '{version}' is not a valid version id. "
                    'Allowed values are between [1, 2^31-1] and the string "latest"',
                )
            found = [sv for sv in versions if sv.version == int(version)]
            if not found:
                raise RegistryError(
                    HTTPStatus.NOT_FOUND, VERSION_NOT_FOUND, f"Version {version} not found."
                )
            sv = found[0]
        return {
            "subject": sv.subject,
            "version": sv.version,
            "id": sv.schema_id,
            "schema": sv.schema_text,
        }

    def subject_version_schema(self, subject: str, version: str) -> Any:
        return json.loads(self.subject_version(subject, version)["schema"])

    def config(self) -> Any:
        return {"compatibilityLevel": "FULL_TRANSITIVE"}

    def root(self) -> Any:
        return {}


class _Handler(BaseHTTPRequestHandler):
    server: RegistryHttpServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        try:
            self._send(HTTPStatus.OK, self.server.api.handle(self.path))
        except RegistryError as err:
            self._send(err.status, {"error_code": err.code, "message": err.message})

    def _read_only(self) -> None:
        self._send(
            HTTPStatus.METHOD_NOT_ALLOWED,
            {
                "error_code": 405,
                "message": "this registry is read-only; schemas change "
                "through schemas/manifest.json",
            },
        )

    do_POST = do_PUT = do_DELETE = _read_only  # noqa: N815

    def _send(self, status: HTTPStatus, body: Any) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.access_log:
            super().log_message(format, *args)


class RegistryHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: RegistryApi, access_log: bool) -> None:
        super().__init__(address, _Handler)
        self.api = api
        self.access_log = access_log


class RegistryServer:
    """The registry endpoint; ``start()`` serves from a daemon thread, ``stop()`` ends it."""

    def __init__(
        self,
        catalog: SchemaCatalog,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        access_log: bool = False,
    ) -> None:
        self._http = RegistryHttpServer((host, port), RegistryApi(catalog), access_log)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> RegistryServer:
        self._thread = threading.Thread(
            target=self._http.serve_forever, name="schema-registry", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._http.serve_forever()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
