"""A store in an S3 bucket (MinIO, SeaweedFS, AWS, ...) through the `minio` client.

Credentials come only from the environment and never appear in messages: every error this
module raises names the endpoint, bucket and key, and nothing else of the connection.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error, ServerError
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from kubeforge.store import layout
from kubeforge.store.base import Store, StoreError, StoreUnreachableError

ENV_S3_ENDPOINT = "KUBEFORGE_S3_ENDPOINT"
ENV_ACCESS_KEY = "AWS_ACCESS_KEY_ID"
ENV_SECRET_KEY = "AWS_SECRET_ACCESS_KEY"
ENV_REGIONS = ("AWS_REGION", "AWS_DEFAULT_REGION")

# S3 bucket naming rules (the common subset every implementation accepts).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# Errors that mean "these credentials are not accepted", not "this object is missing".
_AUTH_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AuthorizationHeaderMalformed",
}
_MISSING_CODES = {"NoSuchKey", "NoSuchObject", "ResourceNotFound"}

T = TypeVar("T")


def parse_endpoint(value: str) -> tuple[str, bool]:
    """`host:port` (plain HTTP) or `http(s)://host:port` -> (`host:port`, secure)."""
    value = value.strip()
    if "://" not in value:
        host, secure = value, False
    else:
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.path not in ("", "/"):
            raise StoreUnreachableError(
                f"{ENV_S3_ENDPOINT}={value!r}: expected host:port or http(s)://host:port"
            )
        host, secure = parsed.netloc, parsed.scheme == "https"
    if not host or "/" in host or "@" in host:
        raise StoreUnreachableError(f"{ENV_S3_ENDPOINT}={value!r}: expected host:port or http(s)://host:port")
    return host, secure


def _http_client() -> urllib3.PoolManager:
    # minio's default retries for minutes; a store that is down should fail in seconds so the
    # caller (a CLI, a Job, a reconcile loop) can report it and move on.
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=2.0, read=60.0),
        maxsize=32,  # a connection kept for each of the (up to 16) threads an import or checkout runs
        retries=urllib3.Retry(
            total=2, connect=1, read=1, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
        ),
    )


def _reason(exc: BaseException) -> str:
    """A short, secret-free reason for a connection failure."""
    inner = getattr(exc, "reason", None) or exc
    text = str(inner).splitlines()[0] if str(inner) else type(inner).__name__
    # urllib3 prefixes reasons with the connection object's repr; keep the human part.
    if "): " in text:
        text = text.split("): ", 1)[1]
    return text[:200]


class S3Store(Store):
    """Keys live under `s3://bucket/prefix/`; semantics match LocalStore."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str,
        access_key: str,
        secret_key: str,
        secure: bool = False,
        region: str | None = None,
        create_bucket: bool = True,
    ) -> None:
        if not _BUCKET.match(bucket):
            raise StoreError(f"s3://{bucket}: not a valid bucket name (3-63 of a-z, 0-9, '.', '-')")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._endpoint = endpoint
        self._secure = secure
        self._client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=_http_client(),
        )
        self._blobs: set[str] | None = None  # every blob in the bucket, when `index_blobs` listed them all
        if create_bucket:
            self._ensure_bucket()

    @classmethod
    def from_uri(cls, uri: str, *, create_bucket: bool = True) -> S3Store:
        """`s3://bucket/prefix`, with the endpoint and credentials from the environment."""
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise StoreError(f"store URI {uri!r}: expected s3://bucket/prefix")
        raw_endpoint = os.environ.get(ENV_S3_ENDPOINT, "")
        missing = [
            name for name, val in ((ENV_S3_ENDPOINT, raw_endpoint), (ENV_ACCESS_KEY, os.environ.get(ENV_ACCESS_KEY)),
                                   (ENV_SECRET_KEY, os.environ.get(ENV_SECRET_KEY))) if not val
        ]
        if missing:
            raise StoreUnreachableError(
                f"S3 store {uri}: environment variable(s) {', '.join(missing)} not set "
                f"(expected {ENV_S3_ENDPOINT}=host:port and AWS credentials)"
            )
        endpoint, secure = parse_endpoint(raw_endpoint)
        region = next((os.environ[n] for n in ENV_REGIONS if os.environ.get(n)), None)
        return cls(
            parsed.netloc,
            parsed.path,
            endpoint=endpoint,
            access_key=os.environ[ENV_ACCESS_KEY],
            secret_key=os.environ[ENV_SECRET_KEY],
            secure=secure,
            region=region,
            create_bucket=create_bucket,
        )

    def __repr__(self) -> str:  # the default repr would not leak, but be explicit: no client inside
        return f"S3Store({self.uri!r}, endpoint={self.endpoint_url!r})"

    # --- naming -------------------------------------------------------------------------
    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def endpoint_url(self) -> str:
        """`host:port` of the S3 endpoint (no scheme), e.g. `127.0.0.1:8333`."""
        return self._endpoint

    @property
    def secure(self) -> bool:
        return self._secure

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object(key)}"

    def presigned_url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        """An HTTP(S) URL that fetches `key` without credentials until it expires (to open a report)."""
        return str(self._call("presign", lambda: self._client.presigned_get_object(
            self.bucket, self._object(key), expires=expires)))

    def triton_uri(self, key_prefix: str = "") -> str:
        """The form tritonserver's --model-repository takes: `s3://HOST:PORT/BUCKET/PATH`.

        Triton speaks plain HTTP to a non-AWS endpoint unless the host carries `https://`.
        """
        key_prefix = key_prefix.strip("/")
        path = self._object(key_prefix) if key_prefix else self.prefix
        host = f"https://{self._endpoint}" if self._secure else self._endpoint
        return f"s3://{host}/{self.bucket}/{path}".rstrip("/")

    def _object(self, key: str) -> str:
        parts = key.split("/")
        # Some S3 servers (SeaweedFS's filer among them) normalise paths, so `..` could leave
        # the prefix; refuse it as LocalStore does rather than depend on the server.
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise StoreError(f"key {key!r} for {self.uri}: expected a relative path without '.', '..' or '//'")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _list_prefix(self, prefix: str) -> str:
        if not prefix:
            return f"{self.prefix}/" if self.prefix else ""
        if prefix.startswith("/") or ".." in prefix.split("/"):
            raise StoreError(f"list prefix {prefix!r} for {self.uri}: expected a relative path")
        return f"{self.prefix}/{prefix}" if self.prefix else prefix

    # --- error translation --------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], T], key: str | None = None) -> T:
        """Run one client call; connection and credential failures become StoreUnreachableError."""
        try:
            return fn()
        except S3Error as exc:
            if key is not None and exc.code in _MISSING_CODES:
                raise KeyError(key) from None
            if exc.code in _AUTH_CODES:
                raise StoreUnreachableError(
                    f"S3 endpoint {self._endpoint} refused the credentials from {ENV_ACCESS_KEY}/"
                    f"{ENV_SECRET_KEY} ({exc.code}) during {what} on {self.uri}"
                ) from None
            if exc.code == "NoSuchBucket":
                raise StoreError(f"S3 bucket {self.bucket!r} does not exist at {self._endpoint} ({what})") from None
            raise StoreError(f"S3 {what} on {self.uri} at {self._endpoint} failed: {exc.code}: {exc.message}") from None
        except ServerError as exc:
            raise StoreUnreachableError(
                f"S3 endpoint {self._endpoint} answered HTTP {exc.status_code} during {what} on {self.uri}; "
                "is it an S3 server?"
            ) from None
        # Local disk errors (OSError other than socket ones) are the caller's, not the store's.
        except (Urllib3HTTPError, ConnectionError, TimeoutError, MinioException) as exc:
            raise StoreUnreachableError(
                f"S3 endpoint {self._endpoint} unreachable during {what} on {self.uri}: {_reason(exc)}"
            ) from None

    def _ensure_bucket(self) -> None:
        if not self._call("bucket check", lambda: self._client.bucket_exists(self.bucket)):
            try:
                self._call("bucket creation", lambda: self._client.make_bucket(self.bucket))
            except StoreError as exc:
                # Two processes may create it at once; losing that race is fine.
                if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
                    raise

    def check(self) -> None:
        if not self._call("check", lambda: self._client.bucket_exists(self.bucket)):
            raise StoreError(f"S3 bucket {self.bucket!r} does not exist at {self._endpoint}")

    # --- primitives ---------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> None:
        name = self._object(key)
        self._call(
            f"put {key}",
            lambda: self._client.put_object(self.bucket, name, io.BytesIO(data), len(data)),
        )

    def get_bytes(self, key: str) -> bytes:
        name = self._object(key)

        def read() -> bytes:
            resp = self._client.get_object(self.bucket, name)
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

        return self._call(f"get {key}", read, key=key)

    def put_file(self, key: str, path: Path) -> None:
        name = self._object(key)
        if not Path(path).is_file():
            raise FileNotFoundError(f"put_file {key!r}: no such file {path}")
        # fput_object streams (multipart above 5 MiB) instead of reading the file into memory.
        self._call(f"put {key}", lambda: self._client.fput_object(self.bucket, name, str(path)))

    def get_file(self, key: str, path: Path) -> None:
        name = self._object(key)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # fget_object downloads to a temporary name and renames: no partial file on failure.
        self._call(f"get {key}", lambda: self._client.fget_object(self.bucket, name, str(path)), key=key)

    def index_blobs(self, limit: int) -> bool:
        """List the blobs once, so `put_blob` knows which exist without a request per blob.

        Gives up (False, and `put_blob` asks per blob as before) past `limit` keys: a listing
        costs a request per 1,000 keys, worth it only when many blobs are about to be stored.
        """
        full = self._list_prefix(layout.BLOB_PREFIX)

        def collect() -> set[str] | None:
            found: set[str] = set()
            for obj in self._client.list_objects(self.bucket, prefix=full, recursive=True):
                if len(found) >= limit:
                    return None
                if obj.object_name and not obj.object_name.endswith("/"):
                    found.add(obj.object_name.rsplit("/", 1)[-1])
            return found

        self._blobs = self._call(f"list {layout.BLOB_PREFIX}", collect)
        return self._blobs is not None

    def forget_blobs(self) -> None:
        """Back to a stat per blob: the listing is a snapshot, trusted only for the import that made it
        (a gc may delete blobs later; a long-lived process must not skip their upload then)."""
        self._blobs = None

    def put_blob(self, data: bytes) -> str:
        known = self._blobs
        if known is None:
            return super().put_blob(data)  # a stat, then a put when it is missing
        digest = hashlib.sha256(data).hexdigest()
        if digest not in known:  # the listing saw every blob: no stat needed
            self.put_bytes(layout.blob_key(digest), data)
            known.add(digest)
        return digest

    def exists(self, key: str) -> bool:
        name = self._object(key)
        try:
            self._call(f"stat {key}", lambda: self._client.stat_object(self.bucket, name), key=key)
        except KeyError:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[str]:
        full = self._list_prefix(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0

        def collect() -> list[str]:
            objs = self._client.list_objects(self.bucket, prefix=full, recursive=True)
            # Directory markers (keys ending in '/') are not objects to a LocalStore reader.
            return [o.object_name[strip:] for o in objs if o.object_name and not o.object_name.endswith("/")]

        # Materialise inside _call so a dropped connection surfaces here, not mid-iteration.
        keys = self._call(f"list {prefix or '/'}", collect)
        return iter(sorted(k for k in keys if k.startswith(prefix)))

    def list_sizes(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        full = self._list_prefix(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0

        def collect() -> list[tuple[str, int]]:
            objs = self._client.list_objects(self.bucket, prefix=full, recursive=True)
            return [
                (o.object_name[strip:], int(o.size or 0))
                for o in objs
                if o.object_name and not o.object_name.endswith("/")
            ]

        items = self._call(f"list {prefix or '/'}", collect)
        return iter(sorted((k, n) for k, n in items if k.startswith(prefix)))

    def list_meta(self, prefix: str = "") -> Iterator[tuple[str, int, str]]:
        """(key, size, ETag) under `prefix`: one listing tells which objects changed (import cache)."""
        full = self._list_prefix(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0

        def collect() -> list[tuple[str, int, str]]:
            objs = self._client.list_objects(self.bucket, prefix=full, recursive=True)
            return [(o.object_name[strip:], int(o.size or 0), (o.etag or "").strip('"'))
                    for o in objs if o.object_name and not o.object_name.endswith("/")]

        items = self._call(f"list {prefix or '/'}", collect)
        return iter(sorted(i for i in items if i[0].startswith(prefix)))

    def delete(self, key: str) -> None:
        name = self._object(key)
        self._call(f"delete {key}", lambda: self._client.remove_object(self.bucket, name))
