"""Differential test of scripts/secantusd.py: the streaming walk against SecantusDB's own rules.

Random collections shaped like Roster's (compound indexes with an equality prefix and `_id` or
a time then `_id` last, ascending and descending) and random keyset queries and filters looked
up by an index prefix (as updates and deletes are), some of the served shapes and some not; every answer of the patched `find_matching` must equal the reference
(SecantusDB's own matcher, sort and projection over the whole collection), document for document
and in order. Run by scripts/test.sh; also `python scripts/test_secantusd.py`.
"""

from __future__ import annotations

import datetime
import os
import sys
import threading

import bson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as s

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import secantusd  # noqa: E402

secantusd.install()
from secantus.projection import apply_projection_batch  # noqa: E402
from secantus.query import matches  # noqa: E402
from secantus.storage import Storage, sort_docs  # noqa: E402

DB, COLL = "t", "members"
INDEXES = {
    "by_status": {"tenant_id": 1, "conversation_id": 1, "status": 1, "_id": 1},
    "by_role": {"tenant_id": 1, "conversation_id": 1, "status": 1, "role": 1, "_id": 1},
    "chat": {"tenant_id": 1, "user_id": 1, "status": 1, "pinned": 1, "at": -1, "_id": -1},
    "audit": {"tenant_id": 1, "_id": 1},
    "events": {"tenant_id": 1, "position": 1},
    "tags": {"tenant_id": 1, "tags": 1},
    "parts": {"tenant_id": 1, "parts.user_id": 1},
}
TENANTS = ["acme", "other"]
STATUSES = ["active", "muted", "left", "banned"]
ROLES = ["owner", "admin", "member"]
BASE = datetime.datetime(2026, 1, 1)

ids = s.builds(lambda n: bson.ObjectId(n.to_bytes(12, "big")), s.integers(990, 1130))
times = s.builds(lambda m: BASE + datetime.timedelta(minutes=m), s.integers(0, 50))


def member(i: int):
    return s.fixed_dictionaries(
        {
            "tenant_id": s.sampled_from(TENANTS),
            "conversation_id": s.sampled_from([1, 2, 3]),
            "user_id": s.sampled_from(["u1", "u2", "u3"]),
            "status": s.sampled_from(STATUSES),
            "role": s.sampled_from(ROLES),
            "pinned": s.booleans(),
            "at": times,
            "position": s.just(i),
        },
        optional={
            "extra": s.integers(0, 3),
            # Arrays make the `tags` and `parts` indexes multikey.
            "tags": s.lists(s.sampled_from(["x", "y", "z"]), max_size=3),
            "parts": s.lists(s.fixed_dictionaries({"user_id": s.sampled_from(["u1", "u2"]),
                                                   "name": s.sampled_from(["A", "B"])}),
                             max_size=2),
        },
    ).map(lambda d: {**d, "_id": bson.ObjectId((1000 + i).to_bytes(12, "big"))})


collections = s.integers(0, 120).flatmap(lambda n: s.tuples(*[member(i) for i in range(n)]))


@s.composite
def queries(draw, docs):
    """A query, most often about a document that exists: its prefix, its `_id` or time as a
    bound (so bounds land exactly on entries, where off-by-one walks go wrong)."""
    near = draw(s.sampled_from(docs)) if docs and draw(s.integers(0, 9)) < 8 else None

    def pick(field, choices):
        return near[field] if near is not None and draw(s.integers(0, 9)) < 8 else draw(choices)

    def id_range():
        bound = s.sampled_from([near["_id"]]) if near is not None else ids
        return draw(s.dictionaries(s.sampled_from(["$gt", "$gte", "$lt", "$lte"]),
                                   s.one_of(bound, ids), max_size=2))

    shape = draw(s.sampled_from(
        ["members", "role", "chat", "chat_tie", "audit", "events", "unique", "prefix", "or", "id",
         "multikey", "other"]))
    f: dict = {"tenant_id": pick("tenant_id", s.sampled_from(TENANTS))}
    direction = draw(s.sampled_from([1, -1]))
    sort: dict = {"_id": direction}
    if shape in ("members", "role"):
        f["conversation_id"] = pick("conversation_id", s.sampled_from([1, 2, 3]))
        f["status"] = pick("status", s.sampled_from(STATUSES))
        if shape == "role":
            f["role"] = pick("role", s.sampled_from(ROLES))
        r = id_range()
        if r:
            f["_id"] = r
    elif shape in ("chat", "chat_tie"):
        f["user_id"] = pick("user_id", s.sampled_from(["u1", "u2", "u3"]))
        f["status"] = pick("status", s.sampled_from(STATUSES))
        f["pinned"] = pick("pinned", s.booleans())
        sort = {"at": -direction, "_id": -direction}
        if shape == "chat":
            at = s.one_of(times, s.just(near["at"])) if near is not None else times
            r = draw(s.dictionaries(s.sampled_from(["$lt", "$lte", "$gt", "$gte"]), at, max_size=2))
            if r:
                f["at"] = r
        else:
            f["at"] = pick("at", times)
            r = id_range()
            if r:
                f["_id"] = r
    elif shape == "audit":
        r = id_range()
        if r:
            f["_id"] = r
    elif shape == "events":
        sort = {"position": 1}
        f["position"] = draw(s.dictionaries(s.sampled_from(["$gt", "$gte", "$lt", "$lte"]),
                                            s.integers(0, 130), max_size=2))
        if not f["position"]:
            del f["position"]
    elif shape == "unique":
        # Plain equalities covering the unique {tenant_id, position} index, and more.
        f["position"] = pick("position", s.integers(0, 130))
        f["status"] = {"$in": draw(s.lists(s.sampled_from(STATUSES), min_size=1, max_size=3))}
        sort = None
    elif shape == "prefix":
        # An index's leading equalities, maybe a `$in` on its next field, and clauses outside
        # it (an update's or a delete's filter): looked up by that prefix.
        f["conversation_id"] = pick("conversation_id", s.sampled_from([1, 2, 3]))
        if draw(s.booleans()):
            f["status"] = {"$in": draw(s.lists(s.sampled_from(STATUSES), min_size=1, max_size=3))}
        elif draw(s.booleans()):
            f["status"] = pick("status", s.sampled_from(STATUSES))
        f["user_id"] = pick("user_id", s.sampled_from(["u1", "u2", "u3"]))
        if draw(s.booleans()):
            f["role"] = {"$in": draw(s.lists(s.sampled_from(ROLES), min_size=1, max_size=2))}
        sort = draw(s.sampled_from([None, {"position": 1}]))
    elif shape == "or":
        # A top-level `$or` (a sweep's filter): one index prefix per branch.
        def branch():
            b = {"conversation_id": pick("conversation_id", s.sampled_from([1, 2, 3]))}
            if draw(s.booleans()):
                b["status"] = pick("status", s.sampled_from(STATUSES))
            if draw(s.booleans()):
                b["role"] = {"$ne": draw(s.sampled_from(ROLES))}
            return b
        f["$or"] = [branch() for _ in range(draw(s.integers(1, 3)))]
        sort = draw(s.sampled_from([None, {"_id": direction}]))
    elif shape == "multikey":
        # Equalities on an array field's index (a tag, a participant inside `$elemMatch`).
        if draw(s.booleans()):
            f["tags"] = draw(s.sampled_from(["x", "y", "z"]))
        else:
            user = draw(s.sampled_from(["u1", "u2"]))
            f["parts"] = {"$elemMatch": {"user_id": user, "name": {"$ne": draw(s.sampled_from(["A", "B"]))}}}
        f["status"] = {"$ne": draw(s.sampled_from(STATUSES))}
        sort = None
    elif shape == "id":
        # What findAndModify writes after its find: `{_id, $and: [query]}`.
        one = near["_id"] if near is not None else draw(ids)
        f = {"_id": draw(s.sampled_from([one, {"$in": [one, draw(ids)]}])),
             "$and": [{"tenant_id": f["tenant_id"], "status": pick("status", s.sampled_from(STATUSES))}]}
        sort = None
    else:
        f["status"] = {"$in": draw(s.lists(s.sampled_from(STATUSES), min_size=1, max_size=2))}
        sort = {"role": 1, "_id": direction}
    if draw(s.integers(0, 4)) == 0:
        f["extra"] = draw(s.integers(0, 3))
    skip = draw(s.sampled_from([0, 0, 0, 1, 3]))
    limit = draw(s.sampled_from([1, 2, 5, 50]))
    projection = draw(s.sampled_from([None, None, {"_id": 1, "status": 1}, {"role": 0}]))
    return f, sort, skip, limit, projection


def reference(store, f, sort, skip, limit, projection):
    """What the query must answer, by SecantusDB's own rules without any index: every document
    of the collection, its `matches`, its `sort_docs`, then skip, limit and projection.

    Not SecantusDB's indexed find: that one answers a range with an inclusive upper bound on a
    compound index field followed by others (`{at: {$lte: t}}` on `{…, at: -1, _id: -1}`)
    without the documents at the bound, which the walk (and MongoDB) return."""
    docs = secantusd._original_find_matching(store, DB, COLL, {})
    out = [d for d in docs if matches(d, f)]
    if sort:
        out = sort_docs(out, sort)
    out = out[skip:][:limit]
    if projection:
        out = apply_projection_batch(out, projection, f, has_sort=bool(sort))
    return out


@settings(
    max_examples=int(os.environ.get("SECANTUSD_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(docs=collections, data=s.data())
def test_the_walk_answers_what_the_original_answers(docs, data):
    qs = data.draw(s.lists(queries(list(docs)), min_size=1, max_size=10))
    store = Storage(":memory:", enable_oplog=False)
    try:
        for name, spec in INDEXES.items():
            store.create_index(DB, COLL, name, spec, {"unique": True} if name == "events" else None)
        if docs:
            store.insert(DB, COLL, list(docs))
        for f, sort, skip, limit, projection in qs:
            args = dict(skip=skip, limit=limit, sort=sort, projection=projection)
            want = reference(store, f, sort, skip, limit, projection)
            got = store.find_matching(DB, COLL, dict(f), **args)
            assert got == want, (f, sort, skip, limit, projection, got, want)
    finally:
        store.close()


def test_the_served_shapes_take_the_walk():
    """The shapes Roster sends are planned by the walk (else the test above proves nothing)."""
    store = Storage(":memory:", enable_oplog=False)
    try:
        for name, spec in INDEXES.items():
            store.create_index(DB, COLL, name, spec, {"unique": True} if name == "events" else None)
        oid = bson.ObjectId()
        served = [
            ({"tenant_id": "a", "conversation_id": 1, "status": "active", "_id": {"$gt": oid}}, {"_id": 1}),
            ({"tenant_id": "a", "conversation_id": 1, "status": "active", "role": "admin"}, {"_id": 1}),
            ({"tenant_id": "a", "user_id": "u", "status": "active", "pinned": True}, {"at": -1, "_id": -1}),
            ({"tenant_id": "a", "user_id": "u", "status": "active", "pinned": True, "at": BASE,
              "_id": {"$lt": oid}}, {"at": -1, "_id": -1}),
            ({"tenant_id": "a", "_id": {"$lt": oid}}, {"_id": -1}),
            ({"tenant_id": "a", "position": {"$gt": 1, "$lte": 9}}, {"position": 1}),
        ]
        for f, sort in served:
            with store._lock:
                assert secantusd._plan(store, DB, COLL, f, sort) is not None, (f, sort)
        not_served = [
            ({"tenant_id": "a", "status": {"$in": ["x"]}}, {"extra": 1, "_id": 1}),
            ({"tenant_id": "a", "conversation_id": 1, "status": "active"}, {"role": 1}),
            ({"tenant_id": "a", "conversation_id": 1}, {"status": 1}),
        ]
        for f, sort in not_served:
            with store._lock:
                assert secantusd._plan(store, DB, COLL, f, sort) is None, (f, sort)
        # A unique index's equalities are looked up there, not by the filter's first clause.
        f = {"tenant_id": "a", "position": 3, "status": {"$in": ["active"]}}
        with store._lock:
            assert secantusd._try_index_id_keys(store, DB, COLL, f) == []
            calls = []
            original = store._scan_index_for_id_keys
            store._scan_index_for_id_keys = lambda *a, **k: calls.append(a[2]) or original(*a, **k)
            secantusd._try_index_id_keys(store, DB, COLL, f)
            del store._scan_index_for_id_keys
            assert calls == ["events"], calls
        # An index's leading equalities and a `$in` on its next field, with a clause outside
        # the index: looked up by that prefix, one key per `$in` value.
        f = {"tenant_id": "a", "conversation_id": 1, "status": {"$in": ["left", "banned"]},
             "user_id": "u1"}
        with store._lock:
            name, keys, _used = secantusd._prefix_keys(store, DB, COLL, f)
            assert name in ("by_status", "by_role") and len(keys) == 2, (name, keys)
            # A top-level `$or`: one prefix per branch; an `_id`: looked up by `_id`.
            f = {"tenant_id": "a", "$or": [{"conversation_id": 1, "status": "left"},
                                           {"conversation_id": 2}]}
            assert len(secantusd._lookup_keys(store, DB, COLL, f)) == 2
            # A participant inside `$elemMatch`: the multikey index on `parts.user_id`.
            f = {"tenant_id": "a", "parts": {"$elemMatch": {"user_id": "u1", "name": {"$ne": "A"}}}}
            assert [n for n, _k in secantusd._lookup_keys(store, DB, COLL, f)] == ["parts"]
            # One equality alone is left to SecantusDB.
            assert secantusd._prefix_keys(store, DB, COLL, {"tenant_id": "a", "x": 1}) is None
    finally:
        store.close()


def test_the_catalog_copy_follows_every_change():
    """The index catalog a command reads is never older than the last change to it, whether
    the change came from this thread or another (an index created, dropped, turned
    multikey)."""
    store = Storage(":memory:", enable_oplog=False)
    try:
        f = {"tenant_id": "c", "count": 1}
        store.create_index(DB, COLL, "by_count", {"tenant_id": 1, "count": 1}, None)
        store.insert(DB, COLL, [{"_id": 1, "tenant_id": "c", "count": 1}])
        assert [d["_id"] for d in store.find_matching(DB, COLL, dict(f))] == [1]
        # Dropped: a lookup through the stale index would find nothing.
        store.drop_index(DB, COLL, "by_count")
        assert [d["_id"] for d in store.find_matching(DB, COLL, dict(f))] == [1]
        # Created again by another thread: this thread's writes maintain it.
        t = threading.Thread(target=store.create_index,
                             args=(DB, COLL, "by_count", {"tenant_id": 1, "count": 1}, None))
        t.start()
        t.join()
        store.insert(DB, COLL, [{"_id": 2, "tenant_id": "c", "count": 1}])
        assert [d["_id"] for d in store.find_matching(DB, COLL, dict(f))] == [1, 2]
        # An array turns the index multikey: the flag is seen at once.
        store.insert(DB, COLL, [{"_id": 3, "tenant_id": "c", "count": [1, 2]}])
        assert "by_count" in store._multikey_index_names(DB, COLL)
        assert [d["_id"] for d in store.find_matching(DB, COLL, dict(f))] == [1, 2, 3]
    finally:
        store.close()


def test_a_write_retried_on_a_conflict_counts_the_reads_of_the_attempt_that_completed():
    """An update that SecantusDB runs again after a write conflict reports the documents its
    last attempt read (one, by `_id`), not the sum over every attempt."""
    from secantus.storage import WriteConflictError

    store = Storage(":memory:", enable_oplog=False)
    try:
        store.insert(DB, COLL, [{"_id": 1, "tenant_id": "c", "status": "ready"}])
        conflicts = [3]
        original = store._candidates_iter

        def conflicting(db, coll, filter):
            out = original(db, coll, filter)
            if conflicts[0]:
                conflicts[0] -= 1
                raise WriteConflictError("another transaction holds the document")
            return out

        store._candidates_iter = conflicting
        secantusd._reads.docs = 0
        f = {"_id": 1, "tenant_id": "c", "status": "ready"}
        r = store.update_matching(DB, COLL, f, {"$set": {"thumbnail": 1}})
        assert conflicts == [0] and r["matched"] == 1, (conflicts, r)
        assert secantusd._reads.docs == 1, secantusd._reads.docs
    finally:
        store.close()


if __name__ == "__main__":
    test_a_write_retried_on_a_conflict_counts_the_reads_of_the_attempt_that_completed()
    test_the_catalog_copy_follows_every_change()
    test_the_served_shapes_take_the_walk()
    test_the_walk_answers_what_the_original_answers()
    print("scripts/test_secantusd.py: the walk answered every query as the reference did")
