"""Starts SecantusDB with a streaming ordered index walk for keyset pages.

SecantusDB 0.7.0b3 answers every ``find`` by collecting all candidates of the index range it
picked, decoding and matching each, sorting them all and only then cutting ``skip`` and
``limit`` (``Storage.find_matching``). A keyset page of a 100,000-member conversation therefore
costs the whole rest of the conversation. This launcher replaces ``find_matching`` with a
version that, for one query shape, walks the index in sort order and stops after ``skip +
limit`` matches; every other query goes to the original code unchanged.

The shape (everything else falls through):

* a positive ``limit``, a ``sort``, no ``hint``, ``collation``, ``min``/``max``, on a plain
  collection (not the oplog, a system or a time-series collection);
* a non-multikey, non-sparse, non-partial, collation-free index whose leading fields are
  equality-matched in the filter by plain values (strings, ObjectIds, booleans, integers,
  dates), followed by the sort fields in the sort's order, all in the index's direction or
  all reversed, the last of them ``_id`` or the last field of a unique index (so the order is
  total: two correct walks return the same page);
* at most one range (``$gt``/``$gte``/``$lt``/``$lte``) among the filter's clauses on that
  index, on the first sort field; any other clause is checked on each document, as before.

A second change: a filter is looked up by the longest run of plain equalities that leads an
index (two fields at least, or a whole unique index), continued by a ``$in`` on the index's next
field, whatever its other clauses (see ``_try_index_id_keys``); SecantusDB otherwise serves a
filter with a clause outside the index it picks, in finds and in update and delete filters
alike, by the filter's first clause alone (the whole tenant, say).

A third change caches the index catalog for the length of one command: SecantusDB reads and
decodes every index's catalog row several times for each document it writes (the index list,
their options, partial filters, multikey flags), a third of the time an update of a
twelve-index collection took. ``_iter_indexes`` now answers from rows this thread read during
the same command; any change to the catalog (an index created, dropped or changed, an index
turning multikey, a collection dropped or renamed) empties every thread's copy, before and
after it runs.

A fifth change: an update rewrites only the index entries that change. SecantusDB removes every
entry the old document contributed to every index of the collection and writes every entry of
the new one (releasing and claiming again each unique key), even when an update touched one
field that two of twelve indexes cover. In its two update paths (``_update_chunk``,
``_update_matching_single_txn``), each index whose entries are the same for the old and the new
document (same keys by SecantusDB's own ``_index_key_variants``, same partial-filter membership,
not geo) is left as it is; the others are removed and written as before (``_same_entries``).

A fourth change adds measurements only: SecantusDB's profiler (``{profile: 2}``) records each
command without what mongod's profiler says about its cost, so every profile entry gets
mongod's ``docsExamined`` (documents read from the collection to answer it), ``nreturned`` /
``nMatched`` / ``ndeleted``, and ``planSummary`` (``COLLSCAN`` when the collection was scanned,
``IXSCAN`` otherwise). ``tests/api/explain.rs`` reads them the same way on MongoDB. A write
that SecantusDB retries because it met another transaction's uncommitted write (it backs off and
runs the statement again, for as long as that transaction stays open) counts the reads of the
attempt that completed, not of every attempt: one update by ``_id`` that waited out a deleting
transaction read one document, not fifty.

Every document the walk yields is still checked with SecantusDB's own ``matches`` against the
whole filter, and projection is applied by SecantusDB's own code, so the walk decides only
which documents are read and when to stop. ``scripts/test_secantusd.py`` compares it with the
original on random data and queries.

Pinned to the SecantusDB version it was written against: on another version it refuses to
start (the private helpers it uses may have changed). Real MongoDB needs none of this.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Mapping

import bson
import secantus
from secantus import deadline as _deadline
from secantus import commands as _commands
from secantus import server as _server
from secantus import storage as st
from secantus.projection import apply_projection_batch
from secantus.query import matches

SUPPORTED_VERSION = "0.7.0b3"

_RANGE_OPS = ("$gt", "$gte", "$lt", "$lte")
# Values whose index encoding is exact and type-stable (no null/missing, array or document
# semantics): the ones keyset queries use.
_PLAIN = (str, bson.ObjectId, bool, int, bson.int64.Int64, bson.datetime_ms.DatetimeMS)

_original_find_matching = st.Storage.find_matching


def _plain(v: Any) -> bool:
    import datetime

    return isinstance(v, _PLAIN) or isinstance(v, datetime.datetime)


def _successor(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with ``prefix``."""
    p = bytearray(prefix)
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return None
    p[-1] += 1
    return bytes(p)


def _plain_indexes(self: st.Storage, db: str, coll: str, *, walk: bool):
    """``(name, key_spec, fields, unique)`` of the indexes both changes may read: ascending or
    descending fields only, not partial, no collation; for an ordered walk (``walk``) also
    neither sparse nor multikey."""
    options = self._index_options_map(db, coll)
    partials = self._partial_filters(db, coll)
    for name, key_spec, sparse, unique in self._all_indexes(db, coll):
        opts = options.get(name) or {}
        if name in partials or opts.get("collation"):
            continue
        if walk and (sparse or opts.get("multikey")):
            continue
        fields = list(key_spec)
        if any(key_spec[f] not in (1, -1) for f in fields):
            continue
        yield name, key_spec, fields, unique


def _equality_run(fields: list, filter) -> int:
    """How many of ``fields``, from the first, ``filter`` matches with plain equalities."""
    k = 0
    while k < len(fields) and fields[k] in filter and _plain(filter[fields[k]]):
        k += 1
    return k


def _plan(self: st.Storage, db: str, coll: str, filter: Mapping[str, Any], sort: Mapping[str, Any]):
    """The walk for this query, or ``None`` when the shape is not the one served here.

    Returns ``(index name, escaped prefix, lower, upper, reverse)`` where ``lower``/``upper``
    are escaped byte bounds (or ``None``) in the index's byte order.
    """
    if not filter or any(not isinstance(k, str) or k.startswith("$") for k in filter):
        return None
    sort_spec = list(sort.items())
    if not sort_spec:
        return None
    if any(d not in (1, -1) for _f, d in sort_spec):
        return None
    best = None
    for name, key_spec, fields, unique in _plain_indexes(self, db, coll, walk=True):
        k = _equality_run(fields, filter)
        if k == 0:
            continue
        eq = set(fields[:k])
        # Sort fields held constant by the equality prefix do not order anything.
        rest = [(f, d) for f, d in sort_spec if f not in eq]
        if not rest or len(fields) < k + len(rest):
            continue
        if [f for f, _ in rest] != fields[k : k + len(rest)]:
            continue
        # The order must be total, so that any correct walk gives the same page: the sort
        # ends in `_id`, or it covers the rest of a unique index.
        if rest[-1][0] != "_id" and not (unique and len(fields) == k + len(rest)):
            continue
        same = [d == key_spec[f] for f, d in rest]
        if not (all(same) or not any(same)):
            continue
        reverse = not same[0]
        # At most one range clause on an index field, and only on the first sort field.
        first = rest[0][0]
        ranged = [f for f in fields if isinstance(filter.get(f), dict)]
        if any(f != first for f in ranged):
            continue
        bounds = filter.get(first) if ranged else None
        if bounds is not None:
            if not bounds or any(op not in _RANGE_OPS for op in bounds):
                continue
            if not all(_plain(v) for v in bounds.values()):
                continue
        parts = [st.encode_value_directed(filter[f], int(key_spec[f])) for f in fields[:k]]
        prefix = st.COMPOUND_SEP.join(parts) + st.COMPOUND_SEP
        lower = upper = None
        direction = int(key_spec[first])
        for op, v in (bounds or {}).items():
            b = st._escape_kb(prefix + st.encode_value_directed(v, direction))
            if direction == -1:
                op = {"$gt": "$lt", "$gte": "$lte", "$lt": "$gt", "$lte": "$gte"}[op]
            if op in ("$gt", "$gte"):
                lower = b if lower is None else max(lower, b)
            else:
                upper = b if upper is None else min(upper, b)
        # The longest equality prefix reads the fewest entries.
        if best is None or k > best[0]:
            best = (k, (name, st._escape_kb(prefix), lower, upper, reverse))
    return best[1] if best else None


def _walk(self: st.Storage, db: str, coll: str, plan, filter, let, want: int) -> list[dict]:
    """The first ``want`` matching documents in the walk's order (``self._lock`` held)."""
    name, prefix, lower, upper, reverse = plan
    docs = self._cursor_optional(st._doc_table_for(db, coll))
    if docs is None:
        return []
    c = self._cursor(st._IDX_ENTRIES_TABLE)
    if reverse:
        seed = _successor(upper if upper is not None else prefix)
        if seed is None:
            return None
        c.set_key(db, coll, name, seed)
        rc = c.search_near()
        if rc == st.wt.WT_NOTFOUND:
            return []
        if rc >= 0 and c.prev() != 0:
            return []
    else:
        c.set_key(db, coll, name, lower if lower is not None else prefix)
        rc = c.search_near()
        if rc == st.wt.WT_NOTFOUND:
            return []
        if rc < 0 and c.next() != 0:
            return []
    out: list[dict] = []
    seen: set[int] = set()
    while True:
        _deadline.check()
        k = c.get_key()
        if (k[0], k[1], k[2]) != (db, coll, name):
            break
        row, rid = st._unpack_entry(bytes(k[3]))
        if not row.startswith(prefix):
            break
        # Loose stops: a row that starts with a bound's bytes may still match (a compound
        # continuation); `matches` decides.
        if not reverse and upper is not None and row > upper and not row.startswith(upper):
            break
        if reverse and lower is not None and row < lower:
            break
        if rid is not None and rid not in seen:
            seen.add(rid)
            docs.reset()
            docs.set_key(db, coll, rid)
            if docs.search() == 0:
                _reads.docs += 1
                d = bson.decode(st._unframe_doc_value(bytes(docs.get_value()))[1])
                if matches(d, filter, vars=let):
                    out.append(d)
                    if len(out) >= want:
                        break
        if (c.prev() if reverse else c.next()) != 0:
            break
    return out


def find_matching(
    self: st.Storage,
    db: str,
    coll: str,
    filter: dict[str, Any] | None = None,
    *,
    skip: int = 0,
    limit: int = 0,
    sort: Mapping[str, Any] | None = None,
    projection: Mapping[str, Any] | None = None,
    hint: str | Mapping[str, Any] | None = None,
    let: dict[str, Any] | None = None,
    collation: Any = None,
    min_bound: Mapping[str, Any] | None = None,
    max_bound: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """``Storage.find_matching`` with the streaming walk for keyset pages (see the module)."""
    served = (
        limit > 0
        and sort
        and filter
        and hint is None
        and collation is None
        and min_bound is None
        and max_bound is None
        and not self._is_oplog_rs(db, coll)
        and not self._is_system_users(db, coll)
        and not self._is_system_version(db, coll)
        and not coll.startswith("system.")
        and not self._is_timeseries(db, coll)
    )
    found = _find_matching(self, db, coll, filter, served, skip=skip, limit=limit, sort=sort,
                           projection=projection, hint=hint, let=let, collation=collation,
                           min_bound=min_bound, max_bound=max_bound)
    _reads.found += len(found)
    return found


def _find_matching(self, db, coll, filter, served, *, skip, limit, sort, projection, hint, let,
                   collation, min_bound, max_bound):
    """The body of ``find_matching``: the walk when ``served`` and planned, else the original."""
    out = None
    if served:
        self._refresh_read_snapshot()
        with self._lock:
            plan = _plan(self, db, coll, filter, sort)
            if plan is not None:
                out = _walk(self, db, coll, plan, filter, let, skip + limit)
    if out is None:
        return _original_find_matching(
            self,
            db,
            coll,
            filter,
            skip=skip,
            limit=limit,
            sort=sort,
            projection=projection,
            hint=hint,
            let=let,
            collation=collation,
            min_bound=min_bound,
            max_bound=max_bound,
        )
    out = out[skip:]
    if projection:
        out = apply_projection_batch(
            out,
            projection,
            filter,
            metas=self._projection_metas(db, coll, out, projection, filter, sort, hint, None),
            has_sort=True,
        )
    return out


_original_try_index_id_keys = st.Storage._try_index_id_keys

# Most values of a trailing `$in` looked up one by one (more go to SecantusDB's own path).
_MAX_IN = 1000


def _prefix_keys(self, db, coll, filter):
    """The index entries for the longest run of plain equalities in ``filter`` (field clauses
    only) that leads an index, optionally continued by a ``$in`` of plain values on the index's
    next field, as ``(index name, [(key bytes, is_prefix)], fields used)``; ``None`` unless
    that run covers at least two fields or a whole unique index.

    Every document the filter matches has an entry under one of those keys: the index is not
    partial and collation-free; a sparse one leaves out only documents without the field, which
    a plain (non-null) value never matches; a multikey one holds an entry for each element, so
    a plain value's documents are all under its key (callers drop repeats). The entries are a
    superset of the matches and callers check every clause with ``matches`` as before."""
    best = None
    for name, key_spec, fields, unique in _plain_indexes(self, db, coll, walk=False):
        k = _equality_run(fields, filter)
        if k == 0:
            continue
        ins = None
        if k < len(fields):
            v = filter.get(fields[k])
            if (
                isinstance(v, dict)
                and list(v) == ["$in"]
                and isinstance(v["$in"], list)
                and 0 < len(v["$in"]) <= _MAX_IN
                and all(_plain(x) for x in v["$in"])
            ):
                ins = v["$in"]
        used = k + (1 if ins is not None else 0)
        whole_unique = bool(unique) and k == len(fields)
        if used < 2 and not whole_unique:
            continue
        score = (whole_unique, used)
        if best is None or score > best[0]:
            best = (score, name, key_spec, fields, k, ins)
    if best is None:
        return None
    (_whole, used), name, key_spec, fields, k, ins = best
    parts = [st.encode_value_directed(filter[f], int(key_spec[f])) for f in fields[:k]]
    tails = [[]] if ins is None else [
        [st.encode_value_directed(x, int(key_spec[fields[k]]))] for x in dict.fromkeys(ins)
    ]
    keys = []
    for tail in tails:
        whole = parts + tail
        kb = st.COMPOUND_SEP.join(whole) if len(whole) > 1 else whole[0]
        if len(whole) == len(fields):
            keys.append((kb, False))
        else:
            keys.append((kb + st.COMPOUND_SEP, True))
    return name, keys, used


def _id_lookup(v) -> bool:
    """Whether an ``_id`` clause is a point lookup (SecantusDB reads those by ``_id``)."""
    return _plain(v) or (
        isinstance(v, dict)
        and list(v) == ["$in"]
        and isinstance(v["$in"], list)
        and all(_plain(x) for x in v["$in"])
    )


def _fields(filter) -> dict | None:
    """The filter's field clauses, with those of a top-level ``$and`` of documents folded in
    (``None`` if two of them name one field): what every match satisfies at once."""
    out = {k: v for k, v in filter.items() if isinstance(k, str) and not k.startswith("$")}
    # `{a: {$elemMatch: {b: v, …}}}` holds only for documents with an element whose `b` is `v`:
    # an index on `a.b` has their entries under `v`.
    for k, v in list(out.items()):
        if isinstance(v, dict) and list(v) == ["$elemMatch"] and isinstance(v["$elemMatch"], dict):
            for sub, sv in v["$elemMatch"].items():
                if isinstance(sub, str) and not sub.startswith("$") and _plain(sv):
                    out.setdefault(f"{k}.{sub}", sv)
    for part in filter.get("$and") or []:
        if not isinstance(part, dict):
            return None
        for k, v in part.items():
            if isinstance(k, str) and not k.startswith("$"):
                if k in out:
                    return None
                out[k] = v
    return out


def _lookup_keys(self, db, coll, filter):
    """``[(index name, keys)]`` whose entries hold every match of ``filter``, or ``None``: the
    filter's own prefix (``_prefix_keys``), or for a top-level ``$or`` whose every branch,
    joined with the rest of the filter, has a longer one, those prefixes together (MongoDB's
    OR of index scans)."""
    base = _fields(filter)
    if base is None:
        return None
    own = _prefix_keys(self, db, coll, base) if base else None
    branches = filter.get("$or")
    if isinstance(branches, list) and branches:
        found = []
        for b in branches:
            if not isinstance(b, dict) or any(k in base or k.startswith("$") for k in b):
                found = None
                break
            f = _prefix_keys(self, db, coll, {**base, **b})
            if f is None or (own is not None and f[2] <= own[2]):
                found = None
                break
            found.append(f)
        if found:
            return [(name, keys) for name, keys, _used in found]
    return None if own is None else [own[:2]]


def _try_index_id_keys(self, db, coll, filter, *, collation=None):
    """``Storage._try_index_id_keys`` that serves two more filter shapes, whatever else the
    filter holds:

    * an ``_id`` equality or ``$in`` is looked up by ``_id``: findAndModify writes
      ``{_id: <found>, $and: [<query>]}``, which SecantusDB otherwise answers by reading the
      whole collection (every findAndModify did, after its own indexed find);
    * the longest run of plain equalities leading an index (plus a ``$in`` on the next field;
      see ``_prefix_keys``), or for a top-level ``$or`` one such run per branch
      (``_lookup_keys``). SecantusDB otherwise serves a filter with a clause outside its index
      by the filter's first clause alone, and a filter with a top-level operator by reading the
      collection: the removal filter ``{tenant_id, conversation_id, external_user_id, status:
      {$in: …}}`` read every membership of the tenant.

    Used by finds and by update and delete filters; callers check every clause with
    ``matches`` as before."""
    if collation is None and isinstance(filter, dict) and filter and "$text" not in filter:
        if len(filter) > 1 and _id_lookup(filter.get("_id")) and not self._is_timeseries(db, coll):
            got = _original_try_index_id_keys(self, db, coll, {"_id": filter["_id"]})
            if got is not None:
                return got
        found = _lookup_keys(self, db, coll, filter)
        if found is not None:
            out: list[int] = []
            for name, keys in found:
                for kb, prefix in keys:
                    out.extend(self._scan_index_for_id_keys(db, coll, name, kb, prefix=prefix))
            # RecordId (insertion) order without repeats, as a collection scan gives: an
            # unsorted find (with a skip, say) answers in the order it did before.
            return sorted(set(out))
    return _original_try_index_id_keys(self, db, coll, filter, collation=collation)


class _Catalog(threading.local):
    """The index catalog rows this thread read during its current command, by
    ``(storage, db, collection)``, valid while the generation is ``gen``."""

    def __init__(self) -> None:
        self.rows: dict = {}
        self.gen = -1


_catalog = _Catalog()
# Bumped before and after every change of the index catalog: a copy read under an older
# generation is never used again.
_catalog_gen = [0]
_catalog_gen_lock = threading.Lock()
_original_iter_indexes = st.Storage._iter_indexes
# Storage methods that write the index catalog (table:secantus_indexes).
_CATALOG_WRITERS = (
    "create_index",
    "drop_index",
    "set_index_expiry",
    "set_index_options",
    "drop_all_indexes",
    "_maybe_mark_multikey",
    "drop_collection",
    "drop_database",
    "rename_collection",
    "_recover_pending_drops_locked",
)


def _iter_indexes(self, db, coll):
    gen = _catalog_gen[0]
    if _catalog.gen != gen:
        _catalog.rows, _catalog.gen = {}, gen
    key = (id(self), db, coll)
    rows = _catalog.rows.get(key)
    if rows is None:
        rows = list(_original_iter_indexes(self, db, coll))
        if _catalog_gen[0] == gen:
            _catalog.rows[key] = rows
    for name, key_spec, opts in rows:
        yield name, dict(key_spec), dict(opts)


def _catalog_writer(original):
    def bump() -> None:
        with _catalog_gen_lock:
            _catalog_gen[0] += 1

    def write(self, *args, **kwargs):
        bump()
        try:
            return original(self, *args, **kwargs)
        finally:
            bump()

    return write


class _Reads(threading.local):
    """Documents read by the command this thread is running (SecantusDB runs each connection's
    commands on its own thread)."""

    docs = 0
    scanned = False
    # Documents the command's finds produced (all batches: SecantusDB computes them at once).
    found = 0


_reads = _Reads()

_original_scan_docs = st.Storage._scan_docs
_original_docs_by_recordids = st.Storage._docs_by_recordids
_original_candidates_iter = st.Storage._candidates_iter
_original_dispatch = _commands.dispatch
_original_record_profile = _commands._maybe_record_profile
_original_insert = st.Storage.insert


def _counted_scan(original):
    """``_scan_docs`` (which ``_scan_docs_natural`` calls) counting what it reads."""

    def scan(self, db, coll):
        if not coll.startswith("system."):
            _reads.scanned = True
        for row in original(self, db, coll):
            _reads.docs += 1
            yield row

    return scan


def _docs_by_recordids(self, db, coll, recordids):
    out = _original_docs_by_recordids(self, db, coll, recordids)
    _reads.docs += len(out)
    return out


def _candidates_iter(self, db, coll, filter):
    before, scanned = _reads.docs, _reads.scanned
    _reads.scanned = False
    out = _original_candidates_iter(self, db, coll, filter)
    if not _reads.scanned:
        _reads.docs = before + len(out)  # the index path reads each candidate once
    _reads.scanned = _reads.scanned or scanned
    return out


# SecantusDB's write bodies that its ``_retry_write_conflicts`` runs again after a conflict.
_RETRIED_WRITES = (
    "_update_chunk",
    "_update_matching_single_txn",
    "_delete_chunk",
    "_delete_matching_single_txn",
)


def _attempt_counted(body):
    """A retried write body whose reads count only if it completes: an attempt rolled back
    on a write conflict leaves ``_reads`` as it found it."""

    def attempt(self, *args, **kwargs):
        before, scanned = _reads.docs, _reads.scanned
        try:
            return body(self, *args, **kwargs)
        except BaseException:
            _reads.docs, _reads.scanned = before, scanned
            raise

    return attempt


def _dispatch(doc, ctx):
    _catalog.rows = {}  # each command reads the catalog afresh
    outer = (_reads.docs, _reads.scanned, _reads.found)
    _reads.docs, _reads.scanned, _reads.found = 0, False, 0
    try:
        return _original_dispatch(doc, ctx)
    finally:
        _reads.docs = outer[0] + _reads.docs
        _reads.scanned = outer[1] or _reads.scanned
        _reads.found = outer[2]


def _counts(name: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """mongod's profile fields for a command's outcome."""
    out: dict[str, Any] = {
        "docsExamined": _reads.docs,
        "planSummary": "COLLSCAN" if _reads.scanned else "IXSCAN",
    }
    cursor = result.get("cursor")
    if isinstance(cursor, Mapping):
        batch = len(cursor.get("firstBatch") or cursor.get("nextBatch") or [])
        # A find's later batches are computed with its first: count them here.
        out["nreturned"] = max(batch, _reads.found) if name == "find" else batch
    elif name == "update":
        out["nMatched"] = int(result.get("n") or 0)
    elif name == "delete":
        out["ndeleted"] = int(result.get("n") or 0)
    elif name.lower() == "findandmodify":
        last = result.get("lastErrorObject") or {}
        out["nMatched"] = int(last.get("n") or 0)
    elif name == "count":
        out["nreturned"] = 1
    return out


_profile_extra = threading.local()


def _record_profile(ctx, name, doc, result, start_ns):
    _profile_extra.fields = _counts(name, result)
    try:
        _original_record_profile(ctx, name, doc, result, start_ns)
    finally:
        _profile_extra.fields = None


_original_delete_index_entries = st.Storage._delete_index_entries
_original_write_index_entries = st.Storage._write_index_entries
# SecantusDB's update paths: each removes the old document's entries, writes the document and
# writes the new one's, with the documents in the locals ``doc`` and ``new``.
_UPDATE_PATHS = frozenset({"_update_chunk", "_update_matching_single_txn"})


class _Unchanged(threading.local):
    """The indexes the update this thread is applying leaves as they are:
    ``(storage, db, collection, recordid, names)``, set when the old entries go and used once
    when the new ones are written."""

    pending = None


_unchanged = _Unchanged()


def _same_entries(self, db, coll, old, new, index, partials, options) -> bool:
    name, key_spec, sparse, _unique = index
    if st._geo_type_of(key_spec) is not None:
        return False
    pf = partials.get(name)
    if pf is not None and matches(old, pf) != matches(new, pf):
        return False
    coll_opt = st._parse_index_collation(options.get(name, {}).get("collation"))
    keys = lambda d: list(st._index_key_variants(d, key_spec, sparse=sparse, collation=coll_opt))
    return keys(old) == keys(new)


def _delete_index_entries(self, db, coll, doc, indexes, partials=None, *, recordid):
    _unchanged.pending = None
    caller = sys._getframe(1)
    new = caller.f_locals.get("new") if caller.f_code.co_name in _UPDATE_PATHS else None
    if not isinstance(new, dict) or caller.f_locals.get("doc") is not doc or not indexes:
        return _original_delete_index_entries(
            self, db, coll, doc, indexes, partials, recordid=recordid
        )
    if partials is None:
        partials = self._partial_filters(db, coll)
    options = self._index_options_map(db, coll)
    same = {ix[0] for ix in indexes if _same_entries(self, db, coll, doc, new, ix, partials, options)}
    _unchanged.pending = (id(self), db, coll, recordid, same)
    changed = [ix for ix in indexes if ix[0] not in same]
    return _original_delete_index_entries(self, db, coll, doc, changed, partials, recordid=recordid)


def _write_index_entries(self, db, coll, doc, indexes, partials=None, *, recordid):
    pending, _unchanged.pending = _unchanged.pending, None
    if pending is not None and pending[:4] == (id(self), db, coll, recordid):
        indexes = [ix for ix in indexes if ix[0] not in pending[4]]
    return _original_write_index_entries(self, db, coll, doc, indexes, partials, recordid=recordid)


def _insert(self, db, coll, docs, *args, **kwargs):
    fields = getattr(_profile_extra, "fields", None)
    if fields and coll == "system.profile":
        docs = [{**d, **fields} for d in docs]
    return _original_insert(self, db, coll, docs, *args, **kwargs)


def install() -> None:
    """Checks the SecantusDB version and puts the walk in place. Exits on another version."""
    if secantus.__version__ != SUPPORTED_VERSION:
        sys.exit(
            f"scripts/secantusd.py was written against SecantusDB {SUPPORTED_VERSION} and "
            f"refuses to patch {secantus.__version__}; pin that version or run secantusd-py."
        )
    st.Storage.find_matching = find_matching
    st.Storage._try_index_id_keys = _try_index_id_keys
    st.Storage._scan_docs = _counted_scan(_original_scan_docs)
    st.Storage._docs_by_recordids = _docs_by_recordids
    st.Storage._candidates_iter = _candidates_iter
    st.Storage.insert = _insert
    st.Storage._iter_indexes = _iter_indexes
    st.Storage._delete_index_entries = _delete_index_entries
    st.Storage._write_index_entries = _write_index_entries
    for name in _CATALOG_WRITERS:
        setattr(st.Storage, name, _catalog_writer(getattr(st.Storage, name)))
    for name in _RETRIED_WRITES:
        body = getattr(st.Storage, name).__wrapped__
        setattr(st.Storage, name, st._retry_write_conflicts(_attempt_counted(body)))
    _commands.dispatch = _dispatch
    _server.dispatch = _dispatch
    _commands._maybe_record_profile = _record_profile


if __name__ == "__main__":
    install()
    from secantus.cli import main

    sys.exit(main())
