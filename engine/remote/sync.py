"""The remote side of the cache: look entries up, fetch their objects verified, push results.

Trust runs one way. An object counts only once its bytes re-hash (BLAKE3) to its name; a bad
one is quarantined and the stage runs instead. An entry counts only when it is well formed,
names exactly the stage's outputs, passes the signing policy, and every object it names
answers a HEAD with the right size. A push uploads objects first, confirms every one with a
HEAD, and only then writes the entry, so a push killed anywhere leaves at worst unreferenced
objects. A remote that fails (unreachable, 403, 500, timeout) is reported once and then left
alone for the rest of the command: the run goes on locally.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import blake3

from sluice.engine.cache import UNREADABLE, RunEntry, Store
from sluice.engine.durable import temp_name
from sluice.engine.fingerprint import hash_data, hash_file
from sluice.engine.model import RemoteTally
from sluice.engine.remote.config import RemoteConfig
from sluice.engine.remote.pack import Bundle, bundle_key, groups, pack_body, pack_entries, pack_key, read_pack
from sluice.engine.remote.protocol import RemoteError, RemoteStore, TooBig, entry_folder, entry_key, object_key
from sluice.engine.remote.sign import Seal, accepted, check, key_from_env, seal
from sluice.engine.state import section_digest

ENTRY_BYTES = 64 * 2**20  # a run entry is JSON: even a 100,000-file folder's manifest is far below this
THREADS = 16  # requests in flight at once: HEADs and GETs are round trips, not CPU
SMALL_OBJECT = 4 * 2**20  # up to this, a lookup checks an object by fetching it (a wrong guess costs little)
_HEX = re.compile(r"^[0-9a-f]{64}$")
_LOG = logging.getLogger("sluice")
_CHUNK = 1 << 20
# What a thread of the remote does: `ask` a small request (HEAD, LIST, an entry's GET), `move` an
# object's bytes, read a `bulk` bundle of small objects (pack.py), or a whole `lookup` or `push`,
# which waits on the others. Each kind has its own threads, so a question is never queued behind a
# download, nor a task behind the requests it waits on (a move may wait on a bundle).
Work = Literal["ask", "move", "bulk", "lookup", "push"]


@dataclass(frozen=True)
class Needed:
    digest: str
    size: int


def needed(entry: RunEntry) -> list[Needed]:
    """Each distinct object an entry names, with its size."""
    out: dict[str, Needed] = {}
    for _, d in entry.outputs.values():
        for value, size in ((m[1], m[2]) for m in d.manifest) if d.kind == "dir" else ((d.value, d.size),):
            out.setdefault(value, Needed(value, int(size)))
    return list(out.values())


def parse_entry(data: bytes, fingerprint: str | None, outputs: Mapping[str, str] | None) -> tuple[RunEntry, Seal, dict[str, Any]] | None:
    """A run entry read from the remote, or None when it is not one we could ever restore safely.

    `outputs` (name → path) must match the stage's exactly: an entry is untrusted, and its paths
    are where a restore writes.
    """
    try:
        doc = json.loads(data)
    except UNREADABLE:
        return None
    return parse_doc(doc, fingerprint, outputs) if isinstance(doc, dict) else None


def parse_doc(
    doc: dict[str, Any], fingerprint: str | None, outputs: Mapping[str, str] | None
) -> tuple[RunEntry, Seal, dict[str, Any]] | None:
    """`parse_entry` of an entry already decoded (one of a pack's)."""
    try:
        state, body = check(doc, None)
        entry = RunEntry.from_json(body)
    except UNREADABLE:
        return None
    if (fingerprint is not None and entry.fingerprint != fingerprint) or not _HEX.match(str(entry.fingerprint)):
        return None
    created: object = entry.created  # typed float, but read from the remote: check it
    stage: object = entry.stage
    if not isinstance(created, (int, float)) or not isinstance(stage, str):
        return None
    if outputs is not None and {n: p for n, (p, _) in entry.outputs.items()} != dict(outputs):
        return None
    for _, d in entry.outputs.values():
        if d.kind not in ("file", "dir") or not _HEX.match(str(d.value)) or not isinstance(d.size, int) or d.size < 0:
            return None
        if d.kind == "dir":
            for m in d.manifest:
                if len(m) != 4 or not _safe_rel(m[0]) or not _HEX.match(str(m[1])) or not isinstance(m[2], int) or m[2] < 0:
                    return None
            if hash_data([list(m) for m in d.manifest]) != d.value:
                return None
    return entry, state, doc


def pack_index(data: bytes | None) -> dict[tuple[str, str], dict[str, Any]]:
    """A pack's well-formed entries by (fingerprint, id); whatever else it holds is left out (it is untrusted)."""
    return _indexed(pack_entries(data))[0]


def _indexed(docs: Iterable[dict[str, Any]]) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[str, int]]:
    """`pack_index` of these entry documents, and the small objects they name (digest → size), each parsed once."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    small: dict[str, int] = {}
    for doc in docs:
        if parsed := parse_doc(doc, None, None):
            found.setdefault((parsed[0].fingerprint, parsed[0].id), doc)
            small.update((n.digest, n.size) for n in _small_of(parsed[0]))
    return found, small


def _safe_rel(rel: Any) -> bool:
    if not isinstance(rel, str) or not rel or "\\" in rel or "\0" in rel:
        return False
    p = PurePosixPath(rel)
    return not p.is_absolute() and ".." not in p.parts and p.as_posix() == rel


@dataclass
class PushReport:
    entries: int = 0
    objects: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)  # why something was not pushed, one line each


@dataclass
class RemoteCache:
    """One remote beside the local store, for the length of one command."""

    config: RemoteConfig
    store: RemoteStore
    local: Store
    read_only: bool = False
    key: bytes | None = field(default_factory=key_from_env)
    down: str | None = None  # why the remote was given up on, once it failed
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _pools: dict[str, ThreadPoolExecutor] = field(default_factory=dict, repr=False)  # by Work
    _fetching: dict[str, Future[str | None]] = field(default_factory=dict, repr=False)
    _adopted: list[str] = field(default_factory=list, repr=False)  # objects this command put into the local store
    _filed: dict[str, Path | None] = field(default_factory=dict, repr=False)  # entries it filed there, by id: their new files
    _pushes: list[Future[PushReport]] = field(default_factory=list, repr=False)
    _lookups: dict[tuple[str, tuple[tuple[str, str], ...] | None, str | None], Future[RunEntry | None]] = field(
        default_factory=dict, repr=False
    )
    _warned_unsigned: bool = field(default=False, repr=False)
    _pack: Future[dict[tuple[str, str], dict[str, Any]]] | None = field(default=None, repr=False)  # (fingerprint, id) → entry
    _pack_name: str | None = field(default=None, repr=False)
    _pack_bundles: list[Bundle] = field(default_factory=list, repr=False)  # what the pack read says it bundles
    _bundled: dict[str, Future[bool]] = field(default_factory=dict, repr=False)  # digest → whether a bundle delivered it
    _bundle_failed: bool = field(default=False, repr=False)  # one was missing or bad: the pack is written again, with them
    # (fingerprint, id) → an entry on the remote, and the document it is filed as there
    _known: dict[tuple[str, str], tuple[RunEntry, dict[str, Any]]] = field(default_factory=dict, repr=False)
    fetched_objects: int = 0
    fetched_bytes: int = 0

    @property
    def writable(self) -> bool:
        return not (self.read_only or self.config.read_only)

    def threads(self, work: Work = "ask") -> ThreadPoolExecutor:
        """This command's threads for one kind of work (see `Work`), started on first use."""
        with self._guard:
            pool = self._pools.get(work)
            if pool is None:
                pool = self._pools[work] = ThreadPoolExecutor(2 if work == "push" else THREADS, thread_name_prefix=f"sluice-{work}")
            return pool

    def _give_up(self, exc: RemoteError) -> None:
        with self._guard:
            first, self.down = self.down is None, self.down or str(exc)
        if first:
            _LOG.warning("sluice: warning: %s; going on without the remote '%s'", exc, self.config.name)

    def close(self, cancel: bool = False) -> None:
        """Wait for what is under way. With `cancel` (the command was refused before anything ran),
        drop what is queued and take back out of the local store what this command fetched into it."""
        for work in ("lookup", "push", "move", "bulk", "ask"):  # a task waits only on pools after its own
            if pool := self._pools.get(work):
                pool.shutdown(wait=True, cancel_futures=cancel or work == "lookup")  # lookups started ahead that nobody asked for
        if cancel:
            for digest in self._adopted:
                self.local.object_path(digest).unlink(missing_ok=True)
            for path in self._filed.values():
                if path is not None:
                    path.unlink(missing_ok=True)

    # ---- lookup

    def lookup(self, fingerprint: str, outputs: Mapping[str, str] | None, entry_id: str | None = None) -> RunEntry | None:
        """The remote entry for `fingerprint` that passes every check, or None (a miss or a failure).

        With `entry_id` (the entry the lock records), that entry is asked for by name first: one
        GET instead of a listing and then a GET. Otherwise, or when it is not there, the newest
        entry that passes. Asked once per command: a second question gets the first answer.
        """
        return None if self.down else self._lookup(fingerprint, outputs, entry_id).result()

    def lookup_soon(self, fingerprint: str, outputs: Mapping[str, str] | None, entry_id: str | None = None) -> None:
        """Start looking `fingerprint` up in the background: planning one stage at a time then waits
        on answers already under way instead of making its round trips in series."""
        if not self.down:
            self._lookup(fingerprint, outputs, entry_id)

    def _lookup(self, fingerprint: str, outputs: Mapping[str, str] | None, entry_id: str | None) -> Future[RunEntry | None]:
        key = (fingerprint, None if outputs is None else tuple(sorted(outputs.items())), entry_id)
        pool = self.threads("lookup")
        with self._guard:
            fut = self._lookups.get(key)
            if fut is None:
                fut = self._lookups[key] = pool.submit(self._lookup_now, fingerprint, outputs, entry_id)
            return fut

    def _lookup_now(self, fingerprint: str, outputs: Mapping[str, str] | None, entry_id: str | None) -> RunEntry | None:
        if self.down:
            return None
        try:
            if entry_id is not None:
                packed = self._packed(fingerprint, entry_id)
                named = self._passing(parse_doc(packed, fingerprint, outputs)) if packed is not None else None
                if named is None:
                    named = self._entry(entry_key(fingerprint, entry_id), fingerprint, outputs)
                if named is not None and named[0].id == entry_id and self._all_there(needed(named[0])):
                    return self._found(*named)
            for entry, doc in self._candidates(fingerprint, outputs):
                if self._all_there(needed(entry)):
                    return self._found(entry, doc)
        except RemoteError as exc:
            self._give_up(exc)
        return None

    def _accept(self, data: bytes | None, fingerprint: str, outputs: Mapping[str, str] | None) -> tuple[RunEntry, dict[str, Any]] | None:
        """A remote entry's bytes as an entry (and its document), if they pass the shape and signing checks."""
        return self._passing(parse_entry(data, fingerprint, outputs) if data is not None else None)

    def _passing(self, parsed: tuple[RunEntry, Seal, dict[str, Any]] | None) -> tuple[RunEntry, dict[str, Any]] | None:
        return (parsed[0], parsed[2]) if parsed is not None and self._trusted(parsed[2]) else None

    def _entry(self, key: str, fingerprint: str, outputs: Mapping[str, str] | None) -> tuple[RunEntry, dict[str, Any]] | None:
        return self._accept(self.store.get_bytes(key, ENTRY_BYTES), fingerprint, outputs)

    def _candidates(
        self, fingerprint: str | None, outputs: Mapping[str, str] | None, folder: str | None = None
    ) -> list[tuple[RunEntry, dict[str, Any]]]:
        keys = [item.key for item in self.store.list(folder or entry_folder(fingerprint or "")) if item.key.endswith(".json")]
        bodies = self.get_entries(keys)
        found = [e for k, data in zip(keys, bodies, strict=True) if (e := self._accept(data, fingerprint or filed_under(k), outputs))]
        return sorted(found, key=lambda e: e[0].created, reverse=True)

    def _known_now(self, entry: RunEntry, doc: dict[str, Any]) -> RunEntry:
        """`entry` (filed as `doc`) is on the remote with every object it names: a pack may carry it."""
        with self._guard:
            self._known[(entry.fingerprint, entry.id)] = (entry, doc)
        return entry

    def _found(self, entry: RunEntry, doc: dict[str, Any]) -> RunEntry:
        """A lookup's answer. When its objects are all local already (small ones come with the lookup), the
        entry is filed locally now, while the downloads go on, rather than in the restore that waits for it:
        filing makes two folders, and a fresh checkout of small stages spent a third of its restores there."""
        if all(self.local.has_object(n.digest) for n in needed(entry)):
            self._file(entry)
        return self._known_now(entry, doc)

    def _file(self, entry: RunEntry) -> None:
        path = self.local.run_path(entry)
        with self._guard:
            if entry.id in self._filed:
                return
            self._filed[entry.id] = None if path.exists() else path  # one it had already is not taken back
        self.local.save_run(entry, durable=False)

    # ---- packs (pack.py)

    def expect_pack(self, section: Mapping[str, Any]) -> None:
        """Start reading the pack of a lock `section`: lookups then take the entries it holds from it."""
        name = section_digest(section)
        if name is None or self.down:
            return
        pool = self.threads()
        with self._guard:
            if self._pack is None:
                self._pack_name, self._pack = name, pool.submit(self._read_pack, name)

    def _read_pack(self, name: str) -> dict[tuple[str, str], dict[str, Any]]:
        try:
            data = self.store.get_bytes(pack_key(name), ENTRY_BYTES)
        except TooBig:
            return {}  # not one we wrote: each entry is asked for on its own
        except RemoteError as exc:
            self._give_up(exc)
            return {}
        docs, self._pack_bundles = read_pack(data)
        index, small = _indexed(docs)
        self._read_bundles(self._pack_bundles, small)
        return index

    def _read_bundles(self, bundles: Sequence[Bundle], named: Mapping[str, int]) -> None:
        """Start reading the bundles that hold small objects the pack's entries name (`named`: digest → size)
        and the local store lacks; downloads of those objects then wait for them, and fetch on their own
        what they did not bring."""
        for bundle in bundles:
            with self._guard:
                wanted = [
                    (d, off, size)
                    for d, off, size in bundle.objects
                    if named.get(d) == size and d not in self._bundled and d not in self._fetching and not self.local.has_object(d)
                ]
                futures: dict[str, Future[bool]] = {d: Future() for d, _, _ in wanted}
                self._bundled.update(futures)
            if not wanted:
                continue
            try:
                self.threads("bulk").submit(self._read_bundle, bundle, wanted, futures)
            except RuntimeError:  # closing: nobody will wait for these
                for fut in futures.values():
                    fut.set_result(False)

    def _read_bundle(self, bundle: Bundle, wanted: Sequence[tuple[str, int, int]], futures: Mapping[str, Future[bool]]) -> None:
        try:
            try:
                data = self.store.get_bytes(bundle.key, bundle.size)
            except RemoteError:  # a bundle only saves requests: the objects themselves are asked for instead
                data = None
            view = memoryview(data) if data is not None and len(data) == bundle.size else None
            bad = view is None
            for digest, offset, size in wanted:
                piece = view[offset : offset + size] if view is not None else None
                ok = piece is not None and blake3.blake3(piece).hexdigest() == digest
                if ok and piece is not None:
                    tmp = self.local.tmp_dir() / temp_name(digest[:40])
                    try:
                        tmp.write_bytes(piece)
                        self._adopt(tmp, digest, size)
                    finally:
                        tmp.unlink(missing_ok=True)
                bad = bad or not ok
                futures[digest].set_result(ok)
            if bad:
                self._bundle_failed = True
                if data is not None and self.writable:  # named by its content, so only a bundle that is gone is sent again
                    with contextlib.suppress(RemoteError):
                        self.store.delete(bundle.key)
        finally:
            for fut in futures.values():
                if not fut.done():
                    fut.set_result(False)

    def _packed(self, fingerprint: str, entry_id: str) -> dict[str, Any] | None:
        return None if self._pack is None else self._pack.result().get((fingerprint, entry_id))

    def write_pack(self, section: Mapping[str, Any], cached: Container[str]) -> bool:
        """File the pack of a lock `section` once each of its `cached` stages has an entry this command
        pushed, or looked up and checked: on the remote, with every object. Otherwise nothing is written,
        since an incomplete pack would replace a complete one. A stage whose entry the lock cannot name
        (a folder output: its manifest is not in the lock) is looked up by listing, so it is left out.
        True when a pack was written."""
        name = section_digest(section)
        if name is None or not self.writable or self.down:
            return False
        chosen: dict[tuple[str, str], dict[str, Any]] = {}
        small: set[tuple[str, int]] = set()
        for sid, rec in section.items():
            entry_id = RunEntry.id_from_lock(rec.get("outputs")) if sid in cached else None
            if entry_id is not None:
                key = (str(rec.get("fingerprint")), entry_id)
                with self._guard:
                    known = self._known.get(key)
                if known is None:
                    return False
                chosen[key] = known[1]
                small.update((n.digest, n.size) for n in _small_of(known[0]))
        if not chosen:
            return False
        if name == self._pack_name and self._pack is not None:
            held = self._pack.result()
            bundled = self._pack_bundles or not small or not self.config.bundles
            if all(held.get(key) == doc for key, doc in chosen.items()) and bundled and not self._bundle_failed:
                return False  # read from it already: nothing new to say
        body = pack_body(chosen.values(), self._write_bundles(sorted(small)) if self.config.bundles else ())
        if len(body) > ENTRY_BYTES:
            return False
        try:
            self.store.put_bytes(pack_key(name), body)
        except RemoteError as exc:
            _LOG.warning("sluice: warning: the lock's pack was not written to the remote '%s': %s", self.config.name, exc)
            return False
        return True

    def _write_bundles(self, small: Sequence[tuple[str, int]]) -> list[Bundle]:
        """Upload the bundles of these small objects (pack.py); [] when any cannot be: the pack then goes without."""
        try:
            return list(self.threads("move").map(self._write_bundle, groups(small)))
        except (RemoteError, OSError, _Unbundled) as exc:
            _LOG.debug("sluice: the lock's objects were not bundled on the remote '%s': %s", self.config.name, exc)
            return []

    def _write_bundle(self, group: Sequence[tuple[str, int]]) -> Bundle:
        tmp = self.local.tmp_dir() / temp_name("bundle")
        b3, sha = blake3.blake3(), hashlib.sha256()
        slices: list[tuple[str, int, int]] = []
        try:
            with open(tmp, "wb") as out:
                for digest, size in group:
                    data = self.local.object_path(digest).read_bytes()
                    if len(data) != size or blake3.blake3(data).hexdigest() != digest:  # never send a corrupt local object
                        raise _Unbundled(f"local object {digest[:12]}… is missing or corrupt")
                    slices.append((digest, out.tell(), size))
                    out.write(data)
                    b3.update(data)
                    sha.update(data)
            key = bundle_key(b3.hexdigest())
            self.store.put_file(key, tmp, sha.digest())  # False: the same bundle is there already
            return Bundle(key, sum(s for _, _, s in slices), tuple(slices))
        finally:
            tmp.unlink(missing_ok=True)

    def get_entries(self, keys: Sequence[str]) -> list[bytes | None]:
        """Each key's body (None: gone meanwhile), at most ENTRY_BYTES each, fetched in parallel."""
        return list(self.threads().map(lambda k: self.store.get_bytes(k, ENTRY_BYTES), keys))

    def _trusted(self, doc: Mapping[str, Any]) -> bool:
        state, _ = check(doc, self.key)
        with self._guard:  # lookups run in parallel: one warning
            warn = self.config.require_signed and self.key is None and not self._warned_unsigned
            self._warned_unsigned = self._warned_unsigned or warn
        if warn:
            _LOG.warning(
                "sluice: warning: remote '%s' requires signed entries but SLUICE_REMOTE_KEY is not set: none is used", self.config.name
            )
        return accepted(state, self.config.require_signed)

    def _all_there(self, objects: list[Needed]) -> bool:
        """Whether a looked-up entry can be restored: each object it names is in the local store
        already, or is on the remote, checked of the object itself. A small one is fetched: its
        bytes re-hashed, which a HEAD cannot do, by the GET its restore needs anyway. A big one
        gets a HEAD with its size, and is fetched once its restore is decided."""
        wanted = [n for n in objects if not self.local.has_object(n.digest)]
        fetched = [self._start(n) for n in wanted if n.size <= SMALL_OBJECT]
        return self._all_present([n for n in wanted if n.size > SMALL_OBJECT]) and all(f.result() is None for f in fetched)

    def _all_present(self, objects: list[Needed]) -> bool:
        """HEAD every object, in parallel: present with the size the entry says, or the entry does not count."""
        sizes = self.threads().map(lambda n: self.store.head(object_key(n.digest)), objects)
        return all(size == n.size for n, size in zip(objects, sizes, strict=True))

    # ---- fetch

    def prefetch(self, entries: Iterable[RunEntry]) -> None:
        """Start downloading what these entries need, all at once; `fetch` then waits for them."""
        for entry in entries:
            for n in needed(entry):
                self._start(n)

    def _start(self, n: Needed) -> Future[str | None]:
        pool = self.threads("move")
        with self._guard:
            fut = self._fetching.get(n.digest)
            if fut is None:
                fut = self._fetching[n.digest] = pool.submit(self._download, n)
            return fut

    def fetch(self, entry: RunEntry) -> str | None:
        """Make every object of `entry` local (verified), then file the entry locally; the problem, or None."""
        missing = [n for n in needed(entry) if not self.local.has_object(n.digest)]
        if missing and self.down:
            return f"the remote '{self.config.name}' is unavailable"
        problems = [p for p in (self._start(n).result() for n in missing) if p]
        if problems:
            return problems[0]
        self._file(entry)
        return None

    def _download(self, n: Needed) -> str | None:
        if self.local.has_object(n.digest):
            return None
        with self._guard:
            bundled = self._bundled.get(n.digest)
        if bundled is not None and bundled.result():
            return None
        tmp = self.local.tmp_dir() / temp_name(n.digest[:40])
        try:
            try:
                actual = self._fetch_into(n, tmp)
            except RemoteError as exc:
                self._give_up(exc)
                return f"the remote '{self.config.name}' failed: {exc}"
            if actual is None:
                return f"remote object {n.digest[:12]}… vanished"
            if actual != n.digest:
                where = self._quarantine(tmp, n.digest)
                _LOG.warning(
                    "sluice: warning: remote object %s… is corrupt (its bytes hash to %s…); set aside in %s",
                    n.digest[:12],
                    actual[:12],
                    where,
                )
                return f"remote object {n.digest[:12]}… is corrupt (BLAKE3 {actual[:12]}…)"
            self._adopt(tmp, n.digest, n.size)
            return None
        finally:
            tmp.unlink(missing_ok=True)

    def _adopt(self, tmp: Path, digest: str, size: int) -> None:
        """Move verified bytes at `tmp` into the local store as object `digest`."""
        self.local.adopt(tmp, digest)
        with self._guard:
            self._adopted.append(digest)
            self.fetched_objects += 1
            self.fetched_bytes += size

    def _fetch_into(self, n: Needed, tmp: Path) -> str | None:
        """Download object `n` to `tmp`: the BLAKE3 of what came, or None when the remote has no such key.
        A small object is read in one piece and hashed in memory (less work on the event loop than a file
        streamed in chunks); one bigger than its entry says goes the big way, to be found corrupt."""
        key = object_key(n.digest)
        if n.size <= SMALL_OBJECT:
            with contextlib.suppress(TooBig):
                data = self.store.get_bytes(key, n.size)
                if data is None:
                    return None
                tmp.write_bytes(data)
                return blake3.blake3(data).hexdigest()
        if not self.store.get_file(key, tmp, n.size):
            return None
        return hash_file(tmp)  # big objects: mmap'd and hashed on every core

    def _quarantine(self, tmp: Path, digest: str) -> Path:
        """Keep the bad bytes locally to look at; drop them from a writable remote so the next push re-uploads."""
        dest = self.local.root / "quarantine" / "remote" / self.config.name / digest
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        if self.writable:
            try:
                self.store.delete(object_key(digest))
            except RemoteError as exc:
                _LOG.warning("sluice: warning: could not remove the corrupt object from the remote: %s", exc)
        return dest

    # ---- push

    def push_later(self, entry: RunEntry) -> None:
        """Push in the background (after a stage ran); `finish` waits and reports."""
        if self.writable and not self.down:
            self._pushes.append(self.threads("push").submit(self._push_quietly, entry))

    def _push_quietly(self, entry: RunEntry) -> PushReport:
        try:
            return self.push(entry)
        except RemoteError as exc:
            self._give_up(exc)
            return PushReport(skipped=[f"{entry.stage}: {exc}"])

    def tally(self, pushed: PushReport) -> RemoteTally:
        """What this command asked of the remote and moved, for the run's summary."""
        return RemoteTally(
            self.config.name,
            self.store.requests(),
            self.fetched_objects,
            self.fetched_bytes,
            pushed.entries,
            pushed.objects,
            pushed.bytes,
            self.down,
        )

    def finish(self) -> PushReport:
        total = PushReport()
        for fut in self._pushes:
            report = fut.result()
            total.entries += report.entries
            total.objects += report.objects
            total.bytes += report.bytes
            total.skipped += report.skipped
        self._pushes.clear()
        for line in total.skipped:
            _LOG.warning("sluice: warning: not pushed: %s", line)
        return total

    def push(self, entry: RunEntry) -> PushReport:
        """Upload what `entry` names that the remote lacks, confirm all of it, then the entry. Raises RemoteError."""
        report = PushReport()
        if not self.writable:
            report.skipped.append(f"{entry.stage}: the remote '{self.config.name}' is read-only")
            return report
        objects = needed(entry)
        sizes = list(self.threads().map(lambda n: self.store.head(object_key(n.digest)), objects))
        todo = [n for n, size in zip(objects, sizes, strict=True) if size != n.size]
        for n in todo:
            self.local.flusher.settle(self.local.object_path(n.digest))  # just stored by this run: maybe not yet renamed
        uploaded = list(self.threads("move").map(self._upload, todo))
        bad = [why for why in uploaded if isinstance(why, str)]
        if bad:
            report.skipped.append(f"{entry.stage}: {bad[0]}")
            return report
        report.objects += sum(1 for u in uploaded if u is True)
        report.bytes += sum(n.size for n, u in zip(todo, uploaded, strict=True) if u is True)
        if not self._all_present(objects):  # never an entry naming an object the remote does not hold
            report.skipped.append(f"{entry.stage}: an object was not confirmed on the remote after upload")
            return report
        body = seal(entry.to_json(), self.key)
        self.store.put_bytes(entry_key(entry.fingerprint, entry.id), json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
        self._known_now(entry, body)
        report.entries += 1
        return report

    def _upload(self, n: Needed) -> bool | str:
        """True uploaded, False already there; a string: why the local object cannot be pushed."""
        path = self.local.object_path(n.digest)
        try:
            b3, sha = _hashes(path)
        except OSError as exc:
            return f"local object {n.digest[:12]}… is unreadable: {exc.strerror}"
        if b3 != n.digest:  # a corrupt local object must never reach the team's cache
            return f"local object {n.digest[:12]}… is corrupt (run `sluice cache verify`)"
        return self.store.put_file(object_key(n.digest), path, sha)

    # ---- whole-cache transfers

    def remote_entries(self) -> Iterator[RunEntry]:
        """Every trusted entry on the remote (for `pull --run-cache`)."""
        yield from (entry for entry, _ in self._candidates(None, None, folder="runs"))


def _small_of(entry: RunEntry) -> list[Needed]:
    """The small objects (up to SMALL_OBJECT: bundled, and checked by fetching) an entry names."""
    return [n for n in needed(entry) if n.size <= SMALL_OBJECT]


class _Unbundled(Exception):
    """A local object could not go into a bundle."""


def filed_under(key: str) -> str:
    """The fingerprint folder an entry's key sits in (`runs/ab/<fp>/<id>.json`)."""
    return key.rsplit("/", 2)[-2] if key.count("/") >= 2 else ""


def _hashes(path: Path) -> tuple[str, bytes]:
    """BLAKE3 hex (to check the object) and SHA-256 bytes (the transport checksum) in one read."""
    b3, sha = blake3.blake3(), hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            b3.update(chunk)
            sha.update(chunk)
    return b3.hexdigest(), sha.digest()


def open_cache(config: RemoteConfig, local: Store, read_only: bool = False) -> RemoteCache:
    """The remote `config` names, over fsspec, beside the local store; nothing is contacted yet."""
    from sluice.engine.remote.fsspec_store import FsspecStore

    return RemoteCache(config, FsspecStore(config), local, read_only)
