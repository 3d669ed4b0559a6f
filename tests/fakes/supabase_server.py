"""A fake of Supabase Storage (``/storage/v1/object/...``) on loopback, with in-memory buckets.

It speaks what ``supabase.create_client(...).storage`` (storage3) sends and expects:
``apiKey`` + ``Authorization: Bearer <key>`` headers, multipart uploads (the file part's
content type, a ``cacheControl`` field, ``x-upsert``), JSON list / sign / delete bodies, and
Supabase's error answers: HTTP 400 with ``{"statusCode": "404", "error": "not_found", ...}``
style bodies for client errors (the storage server reports the real status in the body), 5xx
for server trouble. Public objects are served at ``/object/public/...`` and signed ones at
``/object/sign/...?token=`` (expiry checked), so downloads in tests are real HTTP too.

It also speaks PostgREST (``/rest/v1/<table>``) for the old server's two tables,
``generations`` and ``generated_images`` (see ``TABLES``), as ``supabase``'s postgrest client
sends it: POST with ``Prefer: resolution=merge-duplicates|ignore-duplicates`` and
``on_conflict``, PATCH and GET with filters (``eq``, ``neq``, ``lt``, ``lte``, ``gt``,
``gte``, ``is``, ``in`` and ``or=(...)``), ``Prefer: return=representation|minimal``, and
PostgREST's error answers: 409 ``23505`` for a duplicate key, 409 ``23503`` for an image of
a generation that does not exist, 400 ``PGRST204`` for a column the table does not have.

``fail(...)`` injects faults (e.g. a 503 on the next upload of some path, or ``times=`` many
for an outage that ``recover()`` ends); ``slow(...)`` (FakeServer) adds latency.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from tests.fakes.server import FakeServer, Reply, Request

SERVICE_KEY = "fake-supabase-service-role-key"
PREFIX = "/storage/v1"
REST_PREFIX = "/rest/v1/"


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    # The unique keys (the primary key first): on_conflict must name one of them.
    unique: tuple[tuple[str, ...], ...]
    # Columns a row gets when the insert does not give them.
    defaults: tuple[str, ...] = ()
    # column -> (table, column) it references.
    references: tuple[tuple[str, str, str], ...] = ()


# The old server's tables, as docs/operations.md describes them.
TABLES = {
    "generations": Table(
        columns=(
            "id", "user_id", "prompt", "status", "error_message", "created_at", "updated_at",
        ),
        unique=(("id",),),
        defaults=("created_at", "updated_at"),
    ),
    "generated_images": Table(
        columns=(
            "id", "generation_id", "platform_id", "platform_name", "width", "height",
            "file_size", "storage_path", "url", "created_at",
        ),
        unique=(("id",), ("generation_id", "platform_id")),
        defaults=("id", "created_at"),
        references=(("generation_id", "generations", "id"),),
    ),
}  # fmt: skip


def postgrest_error(status: int, code: str, message: str, details: str | None = None) -> Reply:
    return Reply.json({"code": code, "message": message, "details": details, "hint": None}, status)


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def compare(op: str, have: Any, want: str) -> bool:
    """One PostgREST operator of a filter: ``have`` (the row's value) against ``want`` (the
    text of the filter)."""
    if op == "is":
        return {"null": have is None, "true": have is True, "false": have is False}[want]
    if op == "in":
        return str(have) in [v.strip().strip('"') for v in want.strip("()").split(",")]
    if have is None:
        return False
    want = want.strip('"')
    left: Any = have
    right: Any = want
    if (a := parse_time(have)) is not None and (b := parse_time(want)) is not None:
        left, right = a, b
    elif isinstance(have, bool):
        right = want == "true"
    elif isinstance(have, int | float):
        right = float(want)
    else:
        left = str(have)
    operators = {
        "eq": lambda: left == right, "neq": lambda: left != right, "lt": lambda: left < right,
        "lte": lambda: left <= right, "gt": lambda: left > right, "gte": lambda: left >= right,
    }  # fmt: skip
    return bool(operators[op]())


def split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        current += char
    return parts + [current] if current else parts


def condition_matches(condition: str, row: dict[str, Any]) -> bool:
    """``column.op.value`` or a nested ``or(...)``/``and(...)``, as inside ``or=(...)``."""
    for logic in ("or", "and"):
        if condition.startswith(logic + "("):
            parts = [
                condition_matches(c, row) for c in split_top_level(condition[len(logic) + 1 : -1])
            ]
            return any(parts) if logic == "or" else all(parts)
    column, op, value = condition.split(".", 2)
    return compare(op, row.get(column), value)


PLACEHOLDER = ".emptyFolderPlaceholder"


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def storage_error(status: str, error: str, message: str, *, http_status: int = 400) -> Reply:
    """Supabase's error shape: HTTP 400 for client errors, the real status in the body."""
    return Reply.json(
        {"statusCode": status, "code": error, "error": error, "message": message},
        status=http_status,
    )


def not_found() -> Reply:
    return storage_error("404", "not_found", "Object not found")


@dataclass
class StoredObject:
    data: bytes
    content_type: str
    cache_control: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)

    @property
    def etag(self) -> str:
        return f'"{hashlib.md5(self.data).hexdigest()}"'  # noqa: S324 - an ETag, not security

    def metadata(self) -> dict[str, Any]:
        return {
            "eTag": self.etag,
            "size": len(self.data),
            "mimetype": self.content_type,
            "cacheControl": self.cache_control,
            "lastModified": self.updated_at,
            "contentLength": len(self.data),
            "httpStatusCode": 200,
        }


@dataclass
class Fault:
    method: str
    path_contains: str
    reply: Reply
    times: int


@dataclass
class Upload:
    method: str
    bucket: str
    name: str
    content_type: str
    cache_control: str
    upsert: bool
    size: int


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[dict[str, str], bytes]]:
    """Parts of a multipart/form-data body by field name: (part headers, content)."""
    boundary = content_type.split("boundary=", 1)[1].strip().strip('"').encode()
    parts: dict[str, tuple[dict[str, str], bytes]] = {}
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        field_name = disposition.split('name="', 1)[1].split('"', 1)[0]
        parts[field_name] = (headers, content.removesuffix(b"\r\n"))
    return parts


class FakeSupabase(FakeServer):
    def __init__(
        self, *, service_key: str = SERVICE_KEY, buckets: dict[str, bool] | None = None
    ) -> None:
        super().__init__()
        self.service_key = service_key
        self.secret = uuid.uuid4().bytes
        # bucket name -> public?
        self.public: dict[str, bool] = dict(buckets or {"generated-images": True})
        self.objects: dict[str, dict[str, StoredObject]] = {name: {} for name in self.public}
        self.faults: list[Fault] = []
        self.uploads: list[Upload] = []
        # PostgREST tables: name -> rows.
        self.tables: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
        self.data_lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.base_url

    # --- Test helpers ----------------------------------------------------------------------

    def fail(
        self,
        method: str,
        path_contains: str,
        *,
        status: int = 503,
        times: int = 1,
        body: bytes = b"upstream connect error or disconnect/reset before headers",
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
        """The next ``times`` matching requests answer ``status`` (a gateway-style error),
        after ``delay`` seconds."""
        reply = Reply(
            status=status,
            body=body,
            headers={"Content-Type": "text/plain", **(headers or {})},
            delay=delay,
        )
        self.faults.append(Fault(method, path_contains, reply, times))

    def fail_json(
        self,
        method: str,
        path_contains: str,
        *,
        status: int,
        error: str,
        message: str,
        http_status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        reply = storage_error(str(status), error, message, http_status=http_status or status)
        reply.headers.update(headers or {})
        self.faults.append(Fault(method, path_contains, reply, 1))

    def recover(self) -> None:
        """End every injected fault (an outage made with ``fail(..., times=...)``)."""
        with self.lock:
            self.faults.clear()
            self.latencies.clear()

    def rows(self, table: str, **equal: Any) -> list[dict[str, Any]]:
        """A copy of ``table``'s rows whose columns equal ``equal``."""
        with self.data_lock:
            return [
                dict(row)
                for row in self.tables[table]
                if all(row.get(k) == v for k, v in equal.items())
            ]

    def put(self, bucket: str, name: str, data: bytes, content_type: str = "image/png") -> None:
        with self.data_lock:
            self.objects[bucket][name] = StoredObject(data, content_type, "max-age=3600")

    def names(self, bucket: str = "generated-images") -> list[str]:
        with self.data_lock:
            return sorted(self.objects[bucket])

    def get(self, name: str, bucket: str = "generated-images") -> StoredObject:
        with self.data_lock:
            return self.objects[bucket][name]

    # --- Routing -----------------------------------------------------------------------------

    def handle(self, request: Request) -> Reply:
        for fault in self.faults:
            if (
                fault.times > 0
                and request.method == fault.method
                and fault.path_contains in request.path
            ):
                fault.times -= 1
                return fault.reply
        if request.path.startswith(REST_PREFIX):
            return self.rest(request)
        if not request.path.startswith(PREFIX + "/object/"):
            return Reply.json({"message": "no Route matched with those values"}, status=404)
        rest = request.path[len(PREFIX + "/object/") :]
        segments = [unquote(s) for s in rest.split("/")]
        head = segments[0]
        if request.method == "GET" and head == "public":
            return self.serve_public(segments[1], "/".join(segments[2:]))
        if request.method == "GET" and head == "sign":
            return self.serve_signed(request, segments[1], "/".join(segments[2:]))
        if not self.authorized(request):
            return storage_error("403", "Unauthorized", "invalid signature")
        if request.method == "POST" and head == "list":
            return self.list_objects(segments[1], request.json())
        if request.method == "GET" and head == "info":
            return self.info(segments[1], "/".join(segments[2:]))
        if request.method == "POST" and head == "sign":
            return self.sign(segments[1], "/".join(segments[2:]), request.json())
        if request.method == "GET" and head == "authenticated":
            return self.download(segments[1], "/".join(segments[2:]))
        if request.method == "DELETE" and len(segments) == 1:
            return self.delete(head, request.json())
        name = "/".join(segments[1:])
        if request.method in ("POST", "PUT") and name:
            return self.upload(request, head, name)
        if request.method == "GET" and name:
            return self.download(head, name)
        return Reply.json(
            {"statusCode": "404", "error": "Not Found", "message": "Route not found"}, 404
        )

    def authorized(self, request: Request) -> bool:
        return (
            request.header("authorization") == f"Bearer {self.service_key}"
            and request.header("apikey") == self.service_key
        )

    def bucket_missing(self, bucket: str) -> Reply | None:
        if bucket not in self.objects:
            return storage_error("404", "Bucket not found", "Bucket not found")
        return None

    # --- Operations --------------------------------------------------------------------------

    def upload(self, request: Request, bucket: str, name: str) -> Reply:
        if missing := self.bucket_missing(bucket):
            return missing
        parts = parse_multipart(request.header("content-type") or "", request.body)
        headers, data = parts["file"]
        cache_seconds = parts.get("cacheControl", ({}, b"3600"))[1].decode()
        upsert = request.header("x-upsert") == "true"
        with self.data_lock:
            existing = self.objects[bucket].get(name)
            if request.method == "POST" and existing is not None and not upsert:
                return storage_error("409", "Duplicate", "The resource already exists")
            if request.method == "PUT" and existing is None:
                return not_found()
            stored = StoredObject(
                data,
                headers.get("content-type", "application/octet-stream"),
                f"max-age={cache_seconds}",
            )
            if existing is not None:
                stored.id, stored.created_at = existing.id, existing.created_at
            self.objects[bucket][name] = stored
            self.uploads.append(
                Upload(
                    request.method,
                    bucket,
                    name,
                    stored.content_type,
                    stored.cache_control,
                    upsert,
                    len(data),
                )
            )
        return Reply.json({"Id": stored.id, "Key": f"{bucket}/{name}"})

    def object_reply(self, obj: StoredObject) -> Reply:
        return Reply(
            body=obj.data,
            headers={
                "Content-Type": obj.content_type,
                "Cache-Control": obj.cache_control,
                "ETag": obj.etag,
            },
        )

    def lookup(self, bucket: str, name: str) -> StoredObject | Reply:
        if missing := self.bucket_missing(bucket):
            return missing
        with self.data_lock:
            obj = self.objects[bucket].get(name)
        return obj if obj is not None else not_found()

    def download(self, bucket: str, name: str) -> Reply:
        found = self.lookup(bucket, name)
        return found if isinstance(found, Reply) else self.object_reply(found)

    def serve_public(self, bucket: str, name: str) -> Reply:
        if not self.public.get(bucket):
            return storage_error("404", "Bucket not found", "Bucket not found")
        return self.download(bucket, name)

    def info(self, bucket: str, name: str) -> Reply:
        found = self.lookup(bucket, name)
        if isinstance(found, Reply):
            return found
        return Reply.json(
            {
                "id": found.id,
                "version": found.etag.strip('"'),
                "name": name,
                "bucket_id": bucket,
                "size": len(found.data),
                "content_type": found.content_type,
                "cache_control": found.cache_control,
                "etag": found.etag,
                "last_modified": found.updated_at,
                "created_at": found.created_at,
                "metadata": {},
            }
        )

    def delete(self, bucket: str, body: dict[str, Any]) -> Reply:
        if missing := self.bucket_missing(bucket):
            return missing
        prefixes = body.get("prefixes") or []
        if not prefixes:
            return storage_error(
                "400", "InvalidRequest", "body/prefixes must NOT have fewer than 1 items"
            )
        deleted = []
        with self.data_lock:
            for name in prefixes:
                obj = self.objects[bucket].pop(name, None)
                if obj is not None:
                    deleted.append(
                        {
                            "name": name,
                            "bucket_id": bucket,
                            "id": obj.id,
                            "metadata": obj.metadata(),
                        }
                    )
        return Reply.json(deleted)

    def list_objects(self, bucket: str, body: dict[str, Any]) -> Reply:
        if missing := self.bucket_missing(bucket):
            return missing
        prefix = (body.get("prefix") or "").strip("/")
        limit = int(body.get("limit", 100))
        offset = int(body.get("offset", 0))
        search = body.get("search") or ""
        folders: set[str] = set()
        files: dict[str, StoredObject] = {}
        with self.data_lock:
            for key, obj in self.objects[bucket].items():
                if prefix and not key.startswith(prefix + "/"):
                    continue
                rest = key[len(prefix) + 1 :] if prefix else key
                if "/" in rest:
                    folders.add(rest.split("/", 1)[0])
                else:
                    files[rest] = obj
        entries: list[dict[str, Any]] = [
            {
                "name": n,
                "id": None,
                "updated_at": None,
                "created_at": None,
                "last_accessed_at": None,
                "metadata": None,
            }
            for n in folders
        ]
        entries += [
            {
                "name": n,
                "id": o.id,
                "updated_at": o.updated_at,
                "created_at": o.created_at,
                "last_accessed_at": o.updated_at,
                "metadata": o.metadata(),
            }
            for n, o in files.items()
        ]
        entries = [e for e in entries if e["name"].lower().startswith(search.lower())]
        sort = body.get("sortBy") or {}
        entries.sort(key=lambda e: e["name"], reverse=sort.get("order") == "desc")
        return Reply.json(entries[offset : offset + limit])

    # --- Signed URLs -------------------------------------------------------------------------

    def make_token(self, bucket: str, name: str, expires_in: int) -> str:
        payload = json.dumps(
            {
                "url": f"{bucket}/{name}",
                "iat": int(time.time()),
                "exp": int(time.time()) + expires_in,
            }
        ).encode()
        body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        signature = hmac.new(self.secret, body.encode(), hashlib.sha256).hexdigest()
        return f"{body}.{signature}"

    def token_claims(self, token: str) -> dict[str, Any] | None:
        body, _, signature = token.partition(".")
        expected = hmac.new(self.secret, body.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected):
            return None
        return dict(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))

    def sign(self, bucket: str, name: str, body: dict[str, Any]) -> Reply:
        found = self.lookup(bucket, name)
        if isinstance(found, Reply):
            return found
        expires_in = int(body["expiresIn"])
        token = self.make_token(bucket, name, expires_in)
        return Reply.json({"signedURL": f"/object/sign/{bucket}/{name}?token={token}"})

    def serve_signed(self, request: Request, bucket: str, name: str) -> Reply:
        token = (request.query.get("token") or [""])[0]
        claims = self.token_claims(token)
        if claims is None or claims.get("url") != f"{bucket}/{name}":
            return storage_error("400", "InvalidJWT", "invalid signature")
        if claims["exp"] < time.time():
            return storage_error("400", "InvalidJWT", "jwt expired")
        return self.download(bucket, name)

    # --- PostgREST ---------------------------------------------------------------------------

    def rest(self, request: Request) -> Reply:
        if not self.authorized(request):
            return postgrest_error(401, "PGRST301", "No suitable key or wrong key type")
        name = unquote(request.path[len(REST_PREFIX) :]).strip("/")
        table = TABLES.get(name)
        if table is None:
            return postgrest_error(
                404, "PGRST205", f"Could not find the table 'public.{name}' in the schema cache"
            )
        prefer = {
            key.strip(): value.strip()
            for item in (request.header("prefer") or "").split(",")
            if "=" in item
            for key, value in [item.split("=", 1)]
        }
        with self.data_lock:
            if request.method == "GET":
                return self.answer(self.select(name, request), {"return": "representation"})
            if request.method == "POST":
                return self.insert(name, table, request, prefer)
            if request.method == "PATCH":
                return self.update(name, table, request, prefer)
        return postgrest_error(405, "PGRST117", f"Unsupported HTTP method: {request.method}")

    def select(self, name: str, request: Request) -> list[dict[str, Any]]:
        rows = self.tables[name]
        for column, values in request.query.items():
            if column in ("select", "order", "limit", "offset", "columns", "on_conflict"):
                continue
            for value in values:
                if column in ("or", "and"):
                    rows = [r for r in rows if condition_matches(f"{column}{value}", r)]
                else:
                    op, _, want = value.partition(".")
                    rows = [r for r in rows if compare(op, r.get(column), want)]
        return rows

    def answer(
        self, rows: list[dict[str, Any]], prefer: dict[str, str], status: int = 200
    ) -> Reply:
        if prefer.get("return") == "representation":
            return Reply.json([dict(r) for r in rows], status=status)
        return Reply(status=204 if status == 200 else status)

    def unknown_column(self, name: str, table: Table, row: dict[str, Any]) -> Reply | None:
        for column in row:
            if column not in table.columns:
                return postgrest_error(
                    400, "PGRST204",
                    f"Could not find the '{column}' column of '{name}' in the schema cache",
                )  # fmt: skip
        return None

    def insert(self, name: str, table: Table, request: Request, prefer: dict[str, str]) -> Reply:
        body = request.json()
        new_rows = body if isinstance(body, list) else [body]
        resolution = prefer.get("resolution")
        conflict = (request.query.get("on_conflict") or [""])[0]
        key = tuple(c.strip() for c in conflict.split(",") if c.strip()) or table.unique[0]
        if key not in table.unique:
            return postgrest_error(
                400, "42P10",
                "there is no unique or exclusion constraint matching the ON CONFLICT specification",
            )  # fmt: skip
        written: list[dict[str, Any]] = []
        staged = list(self.tables[name])
        for given in new_rows:
            if error := self.unknown_column(name, table, given):
                return error
            for column, target, target_column in table.references:
                if given.get(column) is not None and not any(
                    r.get(target_column) == given[column] for r in self.tables[target]
                ):
                    return postgrest_error(
                        409, "23503",
                        f'insert or update on table "{name}" violates foreign key constraint',
                        f'Key ({column})=({given[column]}) is not present in table "{target}".',
                    )  # fmt: skip
            row = {column: None for column in table.columns}
            for column in table.defaults:
                row[column] = str(uuid.uuid4()) if column == "id" else now_iso()
            row.update(given)
            existing = next((r for r in staged if all(r.get(c) == row.get(c) for c in key)), None)
            if existing is None:
                for unique in table.unique:
                    if any(all(r.get(c) == row.get(c) for c in unique) for r in staged):
                        return postgrest_error(
                            409, "23505",
                            f'duplicate key value violates unique constraint "{name}_key"',
                        )  # fmt: skip
                staged.append(row)
                written.append(row)
            elif resolution == "merge-duplicates":
                index = staged.index(existing)
                merged = {**existing, **given}
                staged[index] = merged
                written.append(merged)
            elif resolution == "ignore-duplicates":
                continue
            else:
                return postgrest_error(
                    409, "23505", f'duplicate key value violates unique constraint "{name}_pkey"'
                )
        self.tables[name] = staged
        return self.answer(written, prefer, status=201)

    def update(self, name: str, table: Table, request: Request, prefer: dict[str, str]) -> Reply:
        changes = request.json()
        if error := self.unknown_column(name, table, changes):
            return error
        matched = self.select(name, request)
        for row in matched:
            row.update(changes)
        return self.answer(matched, prefer)
