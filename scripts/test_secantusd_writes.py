"""Differential test of scripts/secantusd.py on writes: the same random updates, deletes,
findAndModify and transactions, sent from several threads at once to a patched server (the
launcher) and an unpatched one (``secantusd-py``), must give the same answers and leave the same
collections.

The launcher changes which index entries a filter is looked up by (in updates, deletes and
findAndModify as in finds), caches the index catalog for the length of a command and leaves
unchanged index entries alone in updates (every document is looked up through every index by its
own values at the end); this test drives both under concurrency, with a thread that creates and drops an index meanwhile and
writes that turn an index multikey (so a stale catalog copy would look up a scalar under an
index that no longer holds every match). Each thread writes its own tenant, so its answers and
its documents do not depend on how the threads interleave; all threads share the collection,
its indexes and the catalog.

Run by scripts/test.sh; also ``python scripts/test_secantusd_writes.py``. ``WRITES_OPS`` sets
operations per thread (default 250).
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time

import bson
from pymongo import MongoClient, ReturnDocument
from pymongo.errors import PyMongoError

HERE = os.path.dirname(os.path.abspath(__file__))
VENV_BIN = os.path.join(HERE, "..", ".venv", "bin")
THREADS = 4
OPS = int(os.environ.get("WRITES_OPS", "250"))
DB = "writes"
INDEXES = [
    ({"tenant_id": 1, "conversation_id": 1, "user_id": 1}, {"name": "by_user", "unique": True}),
    ({"tenant_id": 1, "conversation_id": 1, "status": 1, "_id": 1}, {"name": "by_status"}),
    ({"tenant_id": 1, "conversation_id": 1, "status": 1, "role": 1}, {"name": "by_role"}),
    ({"tenant_id": 1, "tags": 1}, {"name": "tags"}),
    ({"tenant_id": 1, "user_id": 1, "status": 1, "at": -1, "_id": -1}, {"name": "chat"}),
]
STATUSES = ["active", "muted", "left", "banned"]
ROLES = ["owner", "admin", "member"]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(cmd: list[str]) -> tuple[subprocess.Popen, MongoClient]:
    port = free_port()
    proc = subprocess.Popen(
        cmd + ["--host", "127.0.0.1", "--port", str(port), "--storage-path", ":memory:",
               "--log-level", "ERROR"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true",
                         serverSelectionTimeoutMS=30_000)
    for _ in range(300):
        try:
            client.admin.command("ping")
            return proc, client
        except PyMongoError:
            time.sleep(0.1)
    proc.kill()
    sys.exit(f"{cmd[0]} did not start")


def operations(seed: int, tenant: str) -> list[tuple]:
    """A random sequence of writes in `tenant`, the same for both servers."""
    rnd = random.Random(seed)
    ops: list[tuple] = []
    conv = lambda: rnd.randint(1, 4)  # noqa: E731
    user = lambda: f"u{rnd.randint(1, 12)}"  # noqa: E731
    for n in range(OPS):
        kind = rnd.choice(["insert", "update_one", "update_many", "update_in", "update_or",
                           "delete_one", "delete_many", "find_and_modify", "transaction",
                           "tags", "upsert"])
        base = {"tenant_id": tenant, "conversation_id": conv()}
        if kind == "insert":
            ops.append((kind, {**base, "user_id": user(), "status": rnd.choice(STATUSES),
                               "role": rnd.choice(ROLES), "at": n, "count": 0}))
        elif kind == "update_one":
            ops.append((kind, {**base, "user_id": user()},
                        {"$inc": {"count": 1}, "$set": {"status": rnd.choice(STATUSES)}}))
        elif kind == "update_many":
            ops.append((kind, {**base, "status": rnd.choice(STATUSES)},
                        {"$max": {"at": n}, "$set": {"role": rnd.choice(ROLES)}}))
        elif kind == "update_in":
            ops.append(("update_many", {**base, "status": {"$in": rnd.sample(STATUSES, 2)},
                                        "user_id": user()}, {"$inc": {"count": 10}}))
        elif kind == "update_or":
            branches = [{"conversation_id": conv(), "user_id": {"$in": [user(), user()]}}
                        for _ in range(rnd.randint(1, 3))]
            ops.append(("update_many", {"tenant_id": tenant, "$or": branches},
                        {"$inc": {"count": 100}}))
        elif kind == "delete_one":
            ops.append((kind, {**base, "user_id": user()}))
        elif kind == "delete_many":
            ops.append((kind, {**base, "status": rnd.choice(STATUSES),
                               "role": rnd.choice(ROLES)}))
        elif kind == "find_and_modify":
            ops.append((kind, {**base, "status": {"$in": ["active", "muted"]}},
                        {"$set": {"status": "left", "at": n}}))
        elif kind == "transaction":
            u = user()
            ops.append((kind, [
                ("update_one", {**base, "user_id": u}, {"$inc": {"count": 1000}}),
                ("update_many", {**base, "status": "left"}, {"$set": {"status": "active"}}),
                ("delete_one", {**base, "user_id": user(), "status": "banned"}),
            ]))
        elif kind == "tags":
            # Arrays on an indexed field turn `tags` multikey mid-run.
            tags = rnd.sample(["a", "b", "c", "d"], rnd.randint(0, 2))
            ops.append(("update_one", {**base, "user_id": user()},
                        {"$set": {"tags": tags if len(tags) != 1 else tags[0]}}))
            ops.append(("update_many", {"tenant_id": tenant, "tags": rnd.choice("abcd")},
                        {"$inc": {"count": 1}}))
        else:
            ops.append(("upsert", {**base, "user_id": user()}, {"$set": {"seen": n}}))
    return ops


def apply(coll, op, session=None):
    kind = op[0]
    try:
        if kind == "insert":
            coll.insert_one(dict(op[1]), session=session)
            return "inserted"
        if kind == "update_one":
            r = coll.update_one(op[1], op[2], session=session)
            return (r.matched_count, r.modified_count)
        if kind == "update_many":
            r = coll.update_many(op[1], op[2], session=session)
            return (r.matched_count, r.modified_count)
        if kind == "upsert":
            r = coll.update_one(op[1], op[2], upsert=True, session=session)
            return (r.matched_count, r.modified_count, r.upserted_id is not None)
        if kind == "delete_one":
            return coll.delete_one(op[1], session=session).deleted_count
        if kind == "delete_many":
            return coll.delete_many(op[1], session=session).deleted_count
        if kind == "find_and_modify":
            d = coll.find_one_and_update(op[1], op[2], sort=[("user_id", 1)],
                                         return_document=ReturnDocument.AFTER, session=session)
            return None if d is None else {k: v for k, v in d.items() if k != "_id"}
    except PyMongoError as e:
        code = getattr(e, "code", None)
        if code == 11000:
            return "duplicate"
        raise
    raise ValueError(kind)


def drive(client: MongoClient, tenant: str, ops: list[tuple], answers: list) -> None:
    coll = client[DB]["members"]
    for op in ops:
        if op[0] == "transaction":
            with client.start_session() as s:
                got = s.with_transaction(lambda s: [apply(coll, o, s) for o in op[1]])
            answers.append(("transaction", got))
        else:
            answers.append((op[0], apply(coll, op)))


def churn_catalog(client: MongoClient, answers: list) -> None:
    """Creates and drops an index over and over while the writers run, writing through it and
    without it in between (on a collection of its own: SecantusDB's dropIndexes waits for the
    entries an open transaction wrote, while holding the lock that transaction's next
    statement needs)."""
    coll = client[DB]["churn"]
    for n in range(OPS // 5):
        coll.create_index([("tenant_id", 1), ("count", 1)], name="by_count")
        coll.insert_one({"tenant_id": "c", "count": n % 7, "n": n})
        answers.append(coll.update_many({"tenant_id": "c", "count": n % 7},
                                        {"$inc": {"hits": 1}}).modified_count)
        coll.drop_index("by_count")
        answers.append(coll.update_many({"tenant_id": "c", "count": (n + 3) % 7},
                                        {"$inc": {"hits": 10}}).modified_count)


def run(client: MongoClient, plans: list[list[tuple]]) -> tuple[list, list]:
    coll = client[DB]["members"]
    for keys, opts in INDEXES:
        coll.create_index(list(keys.items()), **opts)
    answers: list[list] = [[] for _ in range(len(plans) + 1)]
    churn = threading.Thread(target=churn_catalog, args=(client, answers[-1]))
    churn.start()
    workers = [threading.Thread(target=drive, args=(client, f"t{i}", plan, answers[i]))
               for i, plan in enumerate(plans)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    churn.join()
    check_index_entries(coll)
    docs = sorted(({k: v for k, v in d.items() if k != "_id"}
                   for name in ("members", "churn") for d in client[DB][name].find({})),
                  key=lambda d: bson.encode(d))
    return answers, docs


def check_index_entries(coll) -> None:
    """Every document is found through every index by its own values (an update that skipped
    writing an entry it changed would lose it there)."""
    docs = list(coll.find({}))
    for keys, opts in INDEXES:
        for d in docs:
            if "tags" in keys and isinstance(d.get("tags"), list):
                continue  # an array: looked up by each element below
            filter = {k: d.get(k) for k in keys}
            found = [x["_id"] for x in coll.find(filter, hint=opts["name"])]
            assert d["_id"] in found, f"{d} is missing from index {opts['name']}"
        for d in docs:
            for tag in d.get("tags") or [] if isinstance(d.get("tags"), list) else []:
                found = [x["_id"] for x in coll.find({"tenant_id": d["tenant_id"], "tags": tag},
                                                     hint="tags")]
                assert d["_id"] in found, f"{d} is missing from index tags under {tag}"


def main() -> None:
    seed = int(os.environ.get("WRITES_SEED", str(random.randrange(1 << 30))))
    plans = [operations(seed + i, f"t{i}") for i in range(THREADS)]
    results = []
    for cmd in ([os.path.join(VENV_BIN, "python"), os.path.join(HERE, "secantusd.py")],
                [os.path.join(VENV_BIN, "secantusd-py")]):
        proc, client = start(cmd)
        try:
            results.append(run(client, plans))
        finally:
            client.close()
            proc.kill()
            proc.wait()
    (patched_answers, patched_docs), (plain_answers, plain_docs) = results
    for t, (a, b) in enumerate(zip(patched_answers, plain_answers)):
        for n, (x, y) in enumerate(zip(a, b)):
            assert x == y, f"seed {seed}, thread {t}, operation {n}: {x} != {y}"
    assert patched_docs == plain_docs, f"seed {seed}: the collections differ"
    ops = sum(len(a) for a in patched_answers)
    print(f"scripts/test_secantusd_writes.py: {ops} writes from {THREADS} threads (seed {seed}) "
          f"answered and left {len(patched_docs)} documents as the unpatched server did")


if __name__ == "__main__":
    main()
