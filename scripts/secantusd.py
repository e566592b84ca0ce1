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

A second, smaller change: a filter whose plain equalities cover a unique index is looked up in
that index whatever its other clauses (see ``_try_index_id_keys``); SecantusDB otherwise serves
such a filter, in finds and in update and delete filters alike, by its first clause alone.

Every document the walk yields is still checked with SecantusDB's own ``matches`` against the
whole filter, and projection is applied by SecantusDB's own code, so the walk decides only
which documents are read and when to stop. ``scripts/test_secantusd.py`` compares it with the
original on random data and queries.

Pinned to the SecantusDB version it was written against: on another version it refuses to
start (the private helpers it uses may have changed). Real MongoDB needs none of this.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping

import bson
import secantus
from secantus import deadline as _deadline
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
    options = self._index_options_map(db, coll)
    partials = self._partial_filters(db, coll)
    for name, key_spec, sparse, unique in self._all_indexes(db, coll):
        if sparse or name in partials:
            continue
        opts = options.get(name) or {}
        if opts.get("collation") or opts.get("multikey"):
            continue
        fields = list(key_spec)
        if any(key_spec[f] not in (1, -1) for f in fields):
            continue
        # Leading equality prefix.
        k = 0
        while k < len(fields) and fields[k] in filter and _plain(filter[fields[k]]):
            k += 1
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


def _try_index_id_keys(self, db, coll, filter, *, collation=None):
    """``Storage._try_index_id_keys`` that also serves a filter whose plain equalities cover a
    unique index, whatever else it holds (``{tenant_id, conversation_id, external_user_id,
    status: {$in: …}}``): SecantusDB otherwise looks up its first clause alone and reads, say,
    the whole tenant. Used by finds and by update and delete filters; at most one document
    comes back, and its callers check every clause with ``matches`` as before."""
    if collation is None and filter and not any(
        not isinstance(k, str) or k.startswith("$") for k in filter
    ) and not all(_plain(v) for v in filter.values()):
        options = self._index_options_map(db, coll)
        partials = self._partial_filters(db, coll)
        for name, key_spec, sparse, unique in self._all_indexes(db, coll):
            opts = options.get(name) or {}
            if not unique or sparse or name in partials or opts.get("multikey"):
                continue
            if opts.get("collation") or any(d not in (1, -1) for d in key_spec.values()):
                continue
            if all(f in filter and _plain(filter[f]) for f in key_spec):
                parts = [st.encode_value_directed(filter[f], int(key_spec[f])) for f in key_spec]
                kb = st.COMPOUND_SEP.join(parts) if len(parts) > 1 else parts[0]
                return self._scan_index_for_id_keys(db, coll, name, kb)
    return _original_try_index_id_keys(self, db, coll, filter, collation=collation)


def install() -> None:
    """Checks the SecantusDB version and puts the walk in place. Exits on another version."""
    if secantus.__version__ != SUPPORTED_VERSION:
        sys.exit(
            f"scripts/secantusd.py was written against SecantusDB {SUPPORTED_VERSION} and "
            f"refuses to patch {secantus.__version__}; pin that version or run secantusd-py."
        )
    st.Storage.find_matching = find_matching
    st.Storage._try_index_id_keys = _try_index_id_keys


if __name__ == "__main__":
    install()
    from secantus.cli import main

    sys.exit(main())
