"""`sluice cache verify --remote` and `sluice gc --remote`: the local upkeep's rules, applied to a remote.

verify downloads and re-hashes every object, reads every entry (shape, signature policy, and a
HEAD for each object it names) and sets the bad ones aside under `quarantine/` on the remote.
gc keeps every entry the locks name (the workspace's and the chosen git revisions': `maintenance.Keep`)
or younger than --keep-days, every object those name, and anything written within the grace period
(`durable.GRACE_SECONDS`): a concurrent push uploads its objects before its entry, so a young
unreferenced object may be about to be named. Entries are read in parallel, on the remote's pool.
A lock's pack (pack.py) goes with its lock: kept while a kept lock's section names it or it is
younger than --keep-days, and keeps the bundles it names. Removing one is always safe (lookups
fall back to each entry), so verify retires only packs that could never serve: unreadable, or
holding an entry that fails its checks. Bundles are named by their bytes, like objects, and are
re-hashed against their names.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from sluice.engine.durable import GRACE_SECONDS, temp_name
from sluice.engine.errors import SluiceError
from sluice.engine.fingerprint import hash_bytes, hash_file
from sluice.engine.maintenance import DAY, Bad, GcReport, Keep, VerifyReport
from sluice.engine.remote.pack import BUNDLE_BYTES, bundle_keys, pack_entries
from sluice.engine.remote.protocol import Listed, RemoteError, TooBig, object_key
from sluice.engine.remote.sign import accepted, check
from sluice.engine.remote.sync import ENTRY_BYTES, RemoteCache, filed_under, needed, parse_doc, parse_entry


def verify(cache: RemoteCache, delete: bool = False) -> VerifyReport:
    store, pool = cache.store, cache.threads("move")
    bad: list[Bad] = []
    objects = [item for item in store.list("objects") if item.key.count("/") == 2]

    def rehash(item: Listed) -> Bad | None:
        digest = item.key.replace("objects/", "", 1).replace("/", "")
        tmp = cache.local.tmp_dir() / temp_name("verify")
        try:
            if not store.get_file(item.key, tmp, item.size):
                return None  # deleted meanwhile
            actual = hash_file(tmp)
        except RemoteError as exc:  # one unreadable object is a finding, not the end of the check
            return Bad(item.key, f"unreadable: {exc}", digest)
        finally:
            tmp.unlink(missing_ok=True)
        return None if actual == digest else Bad(item.key, "content does not match its name", digest, actual)

    bad += [b for b in pool.map(rehash, objects) if b is not None]
    entries = [item for item in store.list("runs") if item.key.endswith(".json")]
    corrupt = {b.expected for b in bad}
    for item, why in zip(entries, pool.map(lambda i: _entry_problem(cache, i, corrupt), entries), strict=True):
        if why:
            bad.append(Bad(item.key, why))
    for item in cache.store.list("packs"):
        if why := _pack_problem(cache, item):
            bad.append(Bad(item.key, why))
    bundles = list(store.list("bundles"))
    for item, why in zip(bundles, pool.map(lambda i: _bundle_problem(cache, i), bundles), strict=True):
        if why:
            bad.append(Bad(item.key, why))
    if cache.writable:
        for b in bad:
            _set_aside(cache, b.path, delete)
    action = ("deleted" if delete else "quarantined") if cache.writable else "left (the remote is read-only)"
    return VerifyReport(len(objects), sum(i.size for i in objects), len(entries), tuple(bad), action, f"{store.url}/quarantine")


def _read(cache: RemoteCache, item: Listed, what: str, limit: int | None = None) -> tuple[bytes | None, str]:
    """An entry's, a pack's or a bundle's bytes (None: gone meanwhile), or the problem that one over `limit`
    (by default ENTRY_BYTES, read when called) is."""
    limit = ENTRY_BYTES if limit is None else limit
    try:
        return cache.store.get_bytes(item.key, limit), ""
    except TooBig:
        return None, f"over {limit:,} bytes: not {what} sluice writes"


def _entry_problem(cache: RemoteCache, item: Listed, corrupt: set[str]) -> str:
    data, why = _read(cache, item, "a run entry")
    if data is None:
        return why
    parsed = parse_entry(data, filed_under(item.key), None)
    if parsed is None:
        return "not a well-formed run entry for the fingerprint it is filed under"
    entry, _, doc = parsed
    state, _ = check(doc, cache.key)
    if not accepted(state, cache.config.require_signed):
        return f"signature {state.value}" + (" (the remote requires signed entries)" if cache.config.require_signed else "")
    if named := [n.digest for n in needed(entry) if n.digest in corrupt]:
        return f"names a corrupt object, {named[0]}"
    missing = [n.digest for n in needed(entry) if cache.store.head(object_key(n.digest)) != n.size]
    return f"names {len(missing)} missing object(s), e.g. {missing[0]}" if missing else ""


def _bundle_problem(cache: RemoteCache, item: Listed) -> str:
    """A bundle is named by its bytes' BLAKE3, like an object: one that no longer hashes to its name is bad."""
    try:
        data, why = _read(cache, item, "a bundle", BUNDLE_BYTES)
    except RemoteError as exc:  # like an object: one unreadable bundle is a finding, not the end of the check
        return f"unreadable: {exc}"
    if data is None:
        return why  # over the bound, or deleted meanwhile
    name = item.key.removeprefix("bundles/").removesuffix(".bin")
    return "" if hash_bytes(data) == name else "content does not match its name"


def _pack_problem(cache: RemoteCache, item: Listed) -> str:
    data, why = _read(cache, item, "a pack")
    if data is None:
        return why
    docs = pack_entries(data)
    if not docs:
        return "not a readable lock pack"
    for doc in docs:
        parsed = parse_doc(doc, None, None)
        if parsed is None:
            return "holds an entry that is not well formed"
        if not accepted(check(doc, cache.key)[0], cache.config.require_signed):
            return f"holds an entry of stage {parsed[0].stage!r} whose signature does not pass"
    return ""


def _set_aside(cache: RemoteCache, key: str, delete: bool) -> None:
    if not delete:
        tmp = cache.local.tmp_dir() / temp_name("quarantine")
        try:
            if cache.store.get_file(key, tmp):
                cache.store.put_bytes(f"quarantine/{key}", tmp.read_bytes())
        finally:
            tmp.unlink(missing_ok=True)
    cache.store.delete(key)


def gc(keep: Keep, cache: RemoteCache, keep_days: float, dry_run: bool = False, now: float | None = None) -> GcReport:
    if not cache.writable:
        raise SluiceError(f"the remote '{cache.config.name}' is read-only: gc removes nothing from it")
    now = time.time() if now is None else now
    keep_after, grace_after = now - keep_days * DAY, now - GRACE_SECONDS
    live = set(keep.objects)
    doomed: list[Listed] = []
    kept_entries = 0
    items = list(cache.store.list("runs"))
    for item, data in zip(items, cache.get_entries([i.key for i in items]), strict=True):
        parsed = parse_entry(data, filed_under(item.key), None) if data is not None else None
        entry = parsed[0] if parsed else None
        if item.modified >= grace_after or (entry is not None and (keep.names(entry) or entry.created >= keep_after)):
            live.update(n.digest for n in needed(entry)) if entry is not None else None
            kept_entries += 1
        else:
            doomed.append(item)
    n_entries = len(doomed)
    kept_objects = 0
    for item in cache.store.list("objects"):
        digest = item.key.replace("objects/", "", 1).replace("/", "")
        if digest in live or item.modified >= grace_after:
            kept_objects += 1
        else:
            doomed.append(item)
    doomed += list(_older(cache.store.list("tmp"), grace_after))  # temp keys of pushes that died
    packs: list[Listed] = []
    kept_packs: list[Listed] = []
    for i in cache.store.list("packs"):
        old = i.modified < min(grace_after, keep_after)
        (packs if old and i.key.removeprefix("packs/").removesuffix(".json") not in keep.sections else kept_packs).append(i)
    named = set().union(*(bundle_keys(data) for data in cache.get_entries([i.key for i in kept_packs])))  # a kept pack keeps its bundles
    bundles = [i for i in cache.store.list("bundles") if i.modified < min(grace_after, keep_after) and i.key not in named]
    doomed += list(cache.store.list("quarantine"))
    stale = [u for u in cache.store.unfinished() if u.started < grace_after]  # multipart uploads of pushes that died
    if not dry_run:
        for item in packs + bundles + doomed:  # packs, then entries: nothing left names an object already gone
            cache.store.delete(item.key)
        for upload in stale:
            cache.store.abort(upload)
    return GcReport(
        len(doomed) - n_entries,
        n_entries,
        sum(i.size for i in doomed + bundles),
        kept_objects,
        kept_entries,
        dry_run,
        (*(i.key for i in packs + bundles + doomed), *(f"{u.key} (unfinished upload {u.token})" for u in stale)),
        keep.revisions,
        len(stale),
        len(packs),
        len(bundles),
    )


def _older(items: Iterable[Listed], before: float) -> list[Listed]:
    return [i for i in items if i.modified < before]
