"""RemoteStore over any fsspec filesystem, with what S3 does better: conditional PUT, checksums, HEAD.

Generic backends (file://, gs://, ssh://, …) write through a temp key and a rename, so a
reader never sees half an object; S3 PUTs are atomic already, conditional on `If-None-Match: *`
and checked by the server against a SHA-256 we compute. Bigger S3 objects go up in parts, each
checked against its own SHA-256, and become visible only when the upload completes (also
conditional). Every request is retried a bounded number of times with backoff and has a
timeout, so a dead remote costs seconds, not a hang.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import MethodType
from typing import Any, TypeVar

from sluice.engine.durable import temp_name
from sluice.engine.remote.config import RemoteConfig
from sluice.engine.remote.protocol import AlreadyThere, Listed, RemoteError, TooBig, Unfinished

T = TypeVar("T")
ATTEMPTS = 3
BACKOFF = 0.2  # seconds before the 2nd attempt; x4 each further one
SINGLE_PUT = 64 * 2**20  # up to this size an S3 object is one PUT carrying our SHA-256; above, multipart
PART_SIZE = 16 * 2**20  # each part carries its own SHA-256; S3 refuses parts under 5 MiB (but the last)
IN_FLIGHT = 4  # parts sent at once per object; about IN_FLIGHT + 1 parts are held in memory
RANGE_SIZE = 16 * 2**20  # a big object comes down in ranges of this size,
GETS_IN_FLIGHT = 8  # this many at once: at most that many ranges held in memory per object
MAX_PARTS = 10_000  # S3's limit: an object over PART_SIZE * MAX_PARTS gets bigger parts
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
    TCP timeout and 15 s for the banner; gcsfs bounds a request with `requests_timeout` (and retries it
    itself, which `_one_try` takes back)."""
    if protocol in ("ssh", "sftp"):
        return dict.fromkeys(("timeout", "banner_timeout", "auth_timeout", "channel_timeout"), timeout), ATTEMPTS
    if protocol in ("gs", "gcs"):
        return {"requests_timeout": timeout}, ATTEMPTS
    return {}, ATTEMPTS


_GCSFS_RETRIED = ("_request", "_get_file_request", "_get_file_concurrent")


def _one_try(fs: Any) -> bool:
    """Give this gcsfs filesystem one attempt per request, so our loop's bounded retries are the only ones.

    gcsfs retries each request up to 6 times with ~31 s of backoff (a refused port cost 35 s), fixed by a
    decorator when its class is defined. The undecorated methods, wrapped again with one try, are bound
    to this instance alone. False (our loop then makes one attempt) when gcsfs is not built that way."""
    try:
        from gcsfs.retry import retry_request
    except ImportError:
        return False
    inner = [getattr(getattr(type(fs), name, None), "__wrapped__", None) for name in _GCSFS_RETRIED]
    if not all(callable(f) for f in inner):
        return False
    for name, f in zip(_GCSFS_RETRIED, inner, strict=True):
        setattr(fs, name, MethodType(retry_request(retries=1)(f), fs))
    return True


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
    single_put: int = SINGLE_PUT
    part_size: int = PART_SIZE
    in_flight: int = IN_FLIGHT
    range_size: int = RANGE_SIZE
    gets_in_flight: int = GETS_IN_FLIGHT
    _fs: Any = field(default=None, init=False, repr=False)
    _root: str = field(default="", init=False, repr=False)
    _s3: bool = field(default=False, init=False, repr=False)
    _opening: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)  # one client, not one per thread
    _counts: Counter[str] = field(default_factory=Counter, init=False, repr=False)
    _counting: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _attempts: int = field(default=ATTEMPTS, init=False, repr=False)
    _serial: contextlib.AbstractContextManager[Any] = field(default_factory=contextlib.nullcontext, init=False, repr=False)
    _checked: dict[str, Any] = field(default_factory=dict, init=False, repr=False)  # what makes the backend check a write

    @property
    def url(self) -> str:
        return self.remote.url

    def _open(self) -> Any:
        if self._fs is None:
            with self._opening:
                if self._fs is None:
                    self._connect()
        return self._fs

    def _connect(self) -> None:
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
        fs, root = self._call("CONNECT", connect, counted=False)  # sftp connects here: unreachable is a RemoteError like any request
        if protocol in ("ssh", "sftp"):
            fs.ftp.get_channel().settimeout(self.timeout)  # paramiko waits for each SFTP reply forever otherwise
            # fsspec's sftp shares one paramiko SFTP session between threads, and concurrent transfers on it
            # stall until the timeout: the sync layer's parallel HEADs and downloads take turns here
            self._serial = threading.Lock()
        if s3:
            fs.retries = 1  # s3fs retries inside each call too; ours is the one bound
        if protocol in ("gs", "gcs"):
            if not _one_try(fs):
                self._attempts = 1  # gcsfs's own retries stand: ours would multiply them
            # gcsfs compares the MD5 of the bytes it sent with the one the server computed: after the write,
            # but the write goes to a temp key, so a mismatch leaves nothing under the real one
            self._checked = {"consistency": "md5"}
        self._root, self._s3 = root.rstrip("/"), s3
        self._fs = fs  # last: another thread may use it as soon as it is set

    def _path(self, key: str) -> str:
        return f"{self._root}/{key}"

    def requests(self) -> dict[str, int]:
        with self._counting:
            return dict(self._counts)

    def _call(self, what: str, fn: Callable[[], T], counted: bool = True) -> T:
        """Run one request with bounded retries; FileNotFoundError and AlreadyThere are answers, not failures.
        Each attempt is counted under the verb `what` starts with, unless `counted` is False (a connection)."""
        delay = BACKOFF
        verb = what.split(" ", 1)[0]
        for attempt in range(self._attempts):
            if counted:
                with self._counting:
                    self._counts[verb] += 1
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
            try:
                if size > self.single_put:
                    self._multipart(key, src, sha256, size)
                else:
                    checksum = _b64(sha256)
                    self._call(f"PUT {key}", lambda: fs.put_file(str(src), path, mode="create", ChecksumSHA256=checksum))
            except AlreadyThere:
                return False
            return True
        self._via_temp(key, lambda tmp: fs.put_file(str(src), tmp, **self._checked))
        return True

    def get_file(self, key: str, dest: Path, size: int | None = None) -> bool:
        fs = self._open()
        if self._s3 and size is not None and size > 2 * self.range_size:
            return self._get_ranges(key, dest, size)
        try:
            self._call(f"GET {key}", lambda: fs.get_file(self._path(key), str(dest)))
        except FileNotFoundError:
            return False
        return True

    def _get_ranges(self, key: str, dest: Path, size: int) -> bool:
        """Download the first `size` + 1 bytes of `key` as ranged GETs, `gets_in_flight` at a time, each
        written at its offset by the thread that fetched it. s3fs's own get of a big object fetches ranges
        in batches and writes them between batches on its one event loop: measured on 1 GB from SeaweedFS
        on 127.0.0.1, 2.0-2.8 s against 1.1-1.4 s this way. Each range is retried on its own; a range past
        the end of a shorter object comes back empty, so the file holds what the object does."""
        fs = self._fs
        path = self._path(key)

        def fetch(start: int) -> None:
            end = min(start + self.range_size, size + 1)
            try:
                data = self._call(f"GET {key}", partial(_cat_range, fs, path, start, end))
            except FileNotFoundError:
                raise _Gone from None
            try:
                os.pwrite(fd, data, start)
            except OSError as exc:  # a full disk: named, for the run's message
                raise OSError(exc.errno, exc.strerror, str(dest)) from None

        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        pool = ThreadPoolExecutor(self.gets_in_flight, thread_name_prefix="sluice-range")
        try:
            list(pool.map(fetch, range(0, size + 1, self.range_size)))
        except _Gone:
            return False
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            os.close(fd)
        return True

    def put_bytes(self, key: str, data: bytes) -> None:
        fs = self._open()
        if self._s3:
            self._call(f"PUT {key}", lambda: fs.pipe_file(self._path(key), data))
        else:
            self._via_temp(key, lambda tmp: fs.pipe_file(tmp, data, **self._checked))

    def get_bytes(self, key: str, limit: int) -> bytes | None:
        fs = self._open()
        try:
            data: bytes = self._call(f"GET {key}", lambda: fs.cat_file(self._path(key), start=0, end=limit + 1))
        except FileNotFoundError:
            return None
        if len(data) > limit:
            raise TooBig(f"remote {self.url}: {key} is over {limit:,} bytes; not read")
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

    def _multipart(self, key: str, src: Path, sha256: bytes, size: int) -> None:
        """Upload `src` in parts, each refused by the server unless it matches its SHA-256, then complete with
        If-None-Match: * (AlreadyThere if the key was taken meanwhile). Before completing, the bytes read must
        hash to `sha256` (what the caller checked against the object's BLAKE3); after, a composite SHA-256 the
        server reports must be the one of our parts. Any failure aborts the upload: no parts stay behind, and
        nothing is visible under `key` until the upload completes."""
        fs = self._fs
        bucket, name, _ = fs.split_path(self._path(key))
        part = max(self.part_size, -(-size // MAX_PARTS))
        created = self._call(
            f"START {key}", lambda: fs.call_s3("create_multipart_upload", Bucket=bucket, Key=name, ChecksumAlgorithm="SHA256")
        )
        upload = {"Bucket": bucket, "Key": name, "UploadId": created["UploadId"]}
        try:
            parts = self._send_parts(key, src, sha256, part, upload)
            try:
                done = self._call(
                    f"COMPLETE {key}",
                    lambda: fs.call_s3("complete_multipart_upload", MultipartUpload={"Parts": parts}, IfNoneMatch="*", **upload),
                )
            except FileNotFoundError:  # NoSuchUpload: a retried COMPLETE whose first try went through, or aborted by someone
                if self.head(key) != size:
                    raise _cancelled(self.url, key) from None
                return
        except BaseException:
            with contextlib.suppress(Exception):
                self._call(f"ABORT {key}", lambda: fs.call_s3("abort_multipart_upload", **upload))
            raise
        theirs = str(done.get("ChecksumSHA256") or "")  # "<base64>-<parts>"; servers that keep no checksum (rclone) send none
        ours = _b64(hashlib.sha256(b"".join(base64.b64decode(p["ChecksumSHA256"]) for p in parts)).digest())
        if theirs and theirs.split("-")[0] != ours:
            with contextlib.suppress(Exception):  # ours by If-None-Match, and wrong: pull would quarantine it anyway
                self._call(f"DELETE {key}", lambda: fs.rm_file(self._path(key)))
            raise RemoteError(f"remote {self.url}: {key} was assembled with composite SHA-256 {theirs}, not {ours}-{len(parts)}")

    def _send_parts(self, key: str, src: Path, sha256: bytes, part: int, upload: Mapping[str, str]) -> Sequence[dict[str, Any]]:
        """Read `src` once, in order, hashing each part and the whole; at most `in_flight` parts are being sent."""
        whole = hashlib.sha256()
        sent: list[Future[dict[str, Any]]] = []
        pending: set[Future[dict[str, Any]]] = set()
        pool = ThreadPoolExecutor(self.in_flight, thread_name_prefix="sluice-part")
        try:
            with open(src, "rb") as f:
                while data := f.read(part):
                    whole.update(data)
                    number, checksum = len(sent) + 1, _b64(hashlib.sha256(data).digest())
                    sent.append(pool.submit(self._send_part, key, number, self._part_body(number, data), checksum, upload))
                    pending.add(sent[-1])
                    if len(pending) >= self.in_flight:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for finished in done:
                            finished.result()  # a refused part ends the upload now, not after the rest are sent
            if whole.digest() != sha256:
                raise RemoteError(f"remote {self.url}: not completing {key}: {src} changed after it was hashed")
            return [s.result() for s in sent]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _send_part(self, key: str, number: int, body: bytes, checksum: str, upload: Mapping[str, str]) -> dict[str, Any]:
        fs = self._fs
        try:
            answer = self._call(
                f"PUT {key} part {number}",
                lambda: fs.call_s3("upload_part", PartNumber=number, Body=body, ChecksumSHA256=checksum, **upload),
            )
        except FileNotFoundError:
            raise _cancelled(self.url, key) from None
        return {"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": checksum}

    def _part_body(self, number: int, data: bytes) -> bytes:
        """The bytes sent as part `number`, already hashed (a seam: the tests corrupt one here)."""
        return data

    def unfinished(self) -> Sequence[Unfinished]:
        fs = self._open()
        if not self._s3:  # other backends write a temp key (tmp/…), which gc sweeps by age
            return []
        bucket, prefix, _ = fs.split_path(self._root + "/")
        found: list[Unfinished] = []
        marks: dict[str, str] = {}
        while True:  # a page holds up to 1,000 uploads
            ask = partial(fs.call_s3, "list_multipart_uploads", Bucket=bucket, Prefix=prefix, **marks)
            try:
                page = self._call(f"LIST-UPLOADS {prefix}", ask)
            except FileNotFoundError:  # rclone answers NoSuchUpload: it keeps no uploads to list
                return found
            for u in page.get("Uploads") or []:
                key = str(u["Key"])[len(prefix) :].lstrip("/")
                found.append(Unfinished(key, _modified({"created": u.get("Initiated")}), str(u["UploadId"])))
            if not page.get("IsTruncated"):
                return found
            marks = {"KeyMarker": page.get("NextKeyMarker") or "", "UploadIdMarker": page.get("NextUploadIdMarker") or ""}

    def abort(self, upload: Unfinished) -> None:
        fs = self._open()
        bucket, name, _ = fs.split_path(self._path(upload.key))
        with contextlib.suppress(FileNotFoundError):  # NoSuchUpload: completed or aborted meanwhile
            self._call(f"ABORT {upload.key}", lambda: fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=name, UploadId=upload.token))

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


class _Gone(Exception):
    """A range of an object found no object: the key is not there."""


def _cat_range(fs: Any, path: str, start: int, end: int) -> bytes:
    """Bytes `start` to `end` of `path`; none when the object ends before `start` (416 Range Not Satisfiable)."""
    try:
        return bytes(fs.cat_file(path, start=start, end=end))
    except OSError as exc:
        if _status(exc) == 416:
            return b""
        raise


def _cancelled(url: str, key: str) -> RemoteError:
    return RemoteError(f"remote {url}: the multipart upload of {key} was cancelled on the server (NoSuchUpload)")


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


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
