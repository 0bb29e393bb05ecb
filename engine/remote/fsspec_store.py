"""RemoteStore over any fsspec filesystem, with what S3 does better: conditional PUT, checksums, HEAD.

Generic backends (file://, gs://, ssh://, …) write through a temp key and a rename, so a
reader never sees half an object; S3 PUTs are atomic already, conditional on `If-None-Match: *`
and checked by the server against a SHA-256 we compute. Every request is retried a bounded
number of times with backoff and has a timeout, so a dead remote costs seconds, not a hang.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sluice.engine.durable import temp_name
from sluice.engine.remote.config import RemoteConfig
from sluice.engine.remote.protocol import AlreadyThere, Listed, RemoteError

T = TypeVar("T")
ATTEMPTS = 3
BACKOFF = 0.2  # seconds before the 2nd attempt; x4 each further one
SINGLE_PUT = 64 * 2**20  # up to this size an S3 object is one PUT carrying our SHA-256; above, multipart (CRC32 per part)
_LOG = logging.getLogger("sluice")


def timeout_from_env(env: Mapping[str, str] | None = None) -> float:
    """Per-request timeout in seconds: SLUICE_REMOTE_TIMEOUT, default 30."""
    raw = (os.environ if env is None else env).get("SLUICE_REMOTE_TIMEOUT", "")
    try:
        value = float(raw)
    except ValueError:
        return 30.0
    return value if value > 0 else 30.0


def _s3_options(remote: RemoteConfig, timeout: float) -> dict[str, Any]:
    client = dict(remote.options.get("client_kwargs") or {})
    if remote.endpoint_url:
        client["endpoint_url"] = remote.endpoint_url
    client.setdefault("region_name", os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
    config = {
        "connect_timeout": min(timeout, 10.0),
        "read_timeout": timeout,
        "retries": {"max_attempts": 1, "mode": "standard"},
        # objects are re-hashed with BLAKE3 anyway, and a ranged GET (a bounded entry read) carries the
        # whole object's checksum on some servers (rclone), which botocore would then reject
        "response_checksum_validation": "when_required",  # our own loop retries; botocore's would multiply it
        **dict(remote.options.get("config_kwargs") or {}),
    }
    return {
        **{k: v for k, v in remote.options.items() if k not in ("client_kwargs", "config_kwargs")},
        "client_kwargs": client,
        "config_kwargs": config,
        "use_listings_cache": False,  # a cached listing gives stale "absent" answers
        "skip_instance_cache": True,
    }


def _bounds(protocol: str, timeout: float) -> tuple[dict[str, Any], int]:
    """The options that bound one request, and how many attempts our loop makes, for backends that need them.

    fsspec has no common timeout option. sftp (paramiko) connects when the filesystem is made, with no
    TCP timeout and 15 s for the banner; gcsfs retries every request 6 times with up to ~31 s of backoff,
    fixed when it is imported, so our own loop makes one attempt there instead of multiplying it."""
    if protocol in ("ssh", "sftp"):
        return dict.fromkeys(("timeout", "banner_timeout", "auth_timeout", "channel_timeout"), timeout), ATTEMPTS
    if protocol in ("gs", "gcs"):
        return {"requests_timeout": timeout}, 1
    return {}, ATTEMPTS


def _is_s3(protocol: str | tuple[str, ...]) -> bool:
    names = (protocol,) if isinstance(protocol, str) else protocol
    return any(p in ("s3", "s3a") for p in names)


def _precondition_failed(exc: BaseException) -> bool:
    """S3 servers say "taken" as 412 (or 409 for a racing conditional write); s3fs maps only AWS's spelling."""
    if isinstance(exc, FileExistsError):
        return True
    cause = exc.__cause__
    response = getattr(cause, "response", None) or {}
    code = (response.get("Error") or {}).get("Code")
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412)


def _status(exc: BaseException) -> int | None:
    response = getattr(exc.__cause__, "response", None) or getattr(exc, "response", None) or {}
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") if isinstance(response, dict) else None
    return int(status) if isinstance(status, int) else None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return f"access denied (403): {exc}; check the credentials in the environment or profile"
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."


@dataclass
class FsspecStore:
    """One remote, opened lazily: nothing is imported or connected until the first request."""

    remote: RemoteConfig
    timeout: float = field(default_factory=timeout_from_env)
    sleep: Callable[[float], None] = time.sleep
    _fs: Any = field(default=None, init=False, repr=False)
    _root: str = field(default="", init=False, repr=False)
    _s3: bool = field(default=False, init=False, repr=False)
    _attempts: int = field(default=ATTEMPTS, init=False, repr=False)
    _serial: contextlib.AbstractContextManager[Any] = field(default_factory=contextlib.nullcontext, init=False, repr=False)

    @property
    def url(self) -> str:
        return self.remote.url

    def _open(self) -> Any:
        if self._fs is None:
            try:
                import fsspec
            except ImportError:
                raise RemoteError("remotes need fsspec (and s3fs for s3://): pip install 'sluice[remote]'") from None
            protocol = self.remote.url.split("://", 1)[0]
            s3 = _is_s3(protocol)
            bounds, self._attempts = _bounds(protocol, self.timeout)
            options = _s3_options(self.remote, self.timeout) if s3 else {"skip_instance_cache": True, **bounds, **self.remote.options}

            def connect() -> tuple[Any, str]:
                try:
                    return fsspec.core.url_to_fs(self.remote.url, **options)  # type: ignore[no-any-return]
                except ImportError as exc:
                    raise RemoteError(f"the remote {self.remote.url} needs a package fsspec could not import: {exc}") from None
                except (ValueError, TypeError) as exc:
                    raise RemoteError(f"cannot open the remote {self.remote.url}: {exc}") from None

            for noisy in ("botocore", "aiobotocore", "s3fs", "fsspec"):  # "Found credentials in environment variables."
                logging.getLogger(noisy).setLevel(logging.WARNING)
            for noisy in ("paramiko", "gcsfs"):  # they log, with a traceback, each failure they then raise: RemoteError says it once
                logging.getLogger(noisy).setLevel(logging.CRITICAL)
            fs, root = self._call("CONNECT", connect)  # sftp connects here: unreachable is a RemoteError like any request
            if protocol in ("ssh", "sftp"):
                fs.ftp.get_channel().settimeout(self.timeout)  # paramiko waits for each SFTP reply forever otherwise
                # fsspec's sftp shares one paramiko SFTP session between threads, and concurrent transfers on it
                # stall until the timeout: the sync layer's parallel HEADs and downloads take turns here
                self._serial = threading.Lock()
            if s3:
                fs.retries = 1  # s3fs retries inside each call too; ours is the one bound
            self._fs, self._root, self._s3 = fs, root.rstrip("/"), s3
        return self._fs

    def _path(self, key: str) -> str:
        return f"{self._root}/{key}"

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one request with bounded retries; FileNotFoundError and AlreadyThere are answers, not failures."""
        delay = BACKOFF
        for attempt in range(self._attempts):
            try:
                with self._serial:
                    return fn()
            except (FileNotFoundError, AlreadyThere, RemoteError):
                raise
            except PermissionError as exc:  # retrying a 403 cannot help
                raise RemoteError(f"remote {self.url}: {what}: {_reason(exc)}") from None
            except Exception as exc:  # noqa: BLE001 - a backend may raise anything: the message is what the user needs
                if _precondition_failed(exc):
                    raise AlreadyThere(what) from None
                status = _status(exc)
                if status is not None and 400 <= status < 500 and status not in (408, 429):  # refused, not flaky
                    raise RemoteError(f"remote {self.url}: {what} refused ({status}): {_reason(exc)}") from None
                if attempt == self._attempts - 1:
                    raise RemoteError(f"remote {self.url}: {what} failed after {self._attempts} attempts: {_reason(exc)}") from None
                _LOG.debug("sluice: remote %s: %s failed (%s); retrying in %.1fs", self.url, what, exc, delay)
                self.sleep(delay)
                delay *= 4
        raise AssertionError("unreachable")

    # ---- RemoteStore

    def head(self, key: str) -> int | None:
        fs = self._open()
        path = self._path(key)

        def ask() -> int | None:
            if self._s3:  # HEAD the key itself: s3fs's info() falls back to a listing on a miss
                bucket, name, _ = fs.split_path(path)
                return int(fs.call_s3("head_object", Bucket=bucket, Key=name)["ContentLength"])
            info = fs.info(path)
            return int(info["size"]) if info.get("type") == "file" else None

        try:
            return self._call(f"HEAD {key}", ask)
        except FileNotFoundError:
            return None

    def put_file(self, key: str, src: Path, sha256: bytes) -> bool:
        fs = self._open()
        path = self._path(key)
        if self.head(key) is not None:  # servers that ignore If-None-Match (rclone) would overwrite
            return False
        if self._s3:
            size = src.stat().st_size
            extra = {"ChecksumSHA256": base64.b64encode(sha256).decode()} if size <= SINGLE_PUT else {}
            try:
                self._call(f"PUT {key}", lambda: fs.put_file(str(src), path, mode="create", **extra))
            except AlreadyThere:
                return False
            return True
        self._via_temp(key, lambda tmp: fs.put_file(str(src), tmp))
        return True

    def get_file(self, key: str, dest: Path) -> bool:
        fs = self._open()
        try:
            self._call(f"GET {key}", lambda: fs.get_file(self._path(key), str(dest)))
        except FileNotFoundError:
            return False
        return True

    def put_bytes(self, key: str, data: bytes) -> None:
        fs = self._open()
        if self._s3:
            self._call(f"PUT {key}", lambda: fs.pipe_file(self._path(key), data))
        else:
            self._via_temp(key, lambda tmp: fs.pipe_file(tmp, data))

    def get_bytes(self, key: str, limit: int) -> bytes | None:
        fs = self._open()
        try:
            data: bytes = self._call(f"GET {key}", lambda: fs.cat_file(self._path(key), start=0, end=limit + 1))
        except FileNotFoundError:
            return None
        if len(data) > limit:
            raise RemoteError(f"remote {self.url}: {key} is over {limit:,} bytes; not read")
        return data

    def list(self, prefix: str) -> Iterator[Listed]:
        fs = self._open()
        base = self._path(prefix.strip("/"))
        try:
            found = self._call(f"LIST {prefix}", lambda: fs.find(base, detail=True))
        except FileNotFoundError:
            return
        for path, info in sorted(found.items()):
            if info.get("type") != "file":
                continue
            key = path[len(self._root) :].lstrip("/") if path.startswith(self._root) else path
            yield Listed(key, int(info.get("size") or 0), _modified(info))

    def delete(self, key: str) -> None:
        fs = self._open()
        with contextlib.suppress(FileNotFoundError):
            self._call(f"DELETE {key}", lambda: fs.rm_file(self._path(key)))

    def _via_temp(self, key: str, write: Callable[[str], None]) -> None:
        """Write to a temp key, then rename: readers of `key` see all of it or nothing."""
        fs = self._fs
        tmp = self._path(f"tmp/{temp_name(key.rsplit('/', 1)[-1][:40])}")
        parent = self._path(key).rsplit("/", 1)[0]

        def put() -> None:
            fs.makedirs(parent, exist_ok=True)
            fs.makedirs(tmp.rsplit("/", 1)[0], exist_ok=True)
            write(tmp)

        try:
            self._call(f"PUT {key}", put)
            self._call(f"RENAME {key}", lambda: fs.mv(tmp, self._path(key)))
        except BaseException:
            with contextlib.suppress(Exception):  # a leftover temp key: `sluice gc --remote` sweeps tmp/
                fs.rm_file(tmp)
            raise


def _modified(info: Mapping[str, Any]) -> float:
    for name in ("LastModified", "mtime", "updated", "last_modified", "created"):
        value = info.get(name)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return 0.0
