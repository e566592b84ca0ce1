"""Fault-injection run: Roster under database kills, connection cuts and stalls, and kills of its
own instances, while clients create conversations and add and remove members, retrying with
`Idempotency-Key` as the README asks. Afterwards it reads the database and checks what the
clients were told against what is there.

Layout: SecantusDB on disk with ``--sync-on-commit`` ← a TCP proxy (this process; it can cut
every connection or stall them) ← two ``roster serve`` instances ← client threads (each request
to either instance). Faults, in turn, every ``--every`` seconds: ``kill -9`` of instance A, of
instance B, of the database (restarted on the same storage), a cut of every database connection,
a stall of every database connection for 3 s, and for 9 s (past the write budget and the commit
grace, so commits in flight end ``write_outcome_unknown``). A client retries the same key after
``409 idempotency_key_outcome_unknown`` (after its ``Retry-After``) until the key answers: from
the committed effect if the first try's commit landed, or by running anew if it did not.

Checks: every acknowledged creation exists once (its key's name appears on exactly one
conversation); every acknowledged add is present unless an acknowledged removal followed, and
every acknowledged removal is gone; each conversation's ``member_count`` equals its present
memberships, it has exactly one owner, and no user has two memberships of one conversation;
every answer was a 2xx, a documented 4xx or a 503 with ``Retry-After`` — never a 500.

Run by ``scripts/faults.sh`` (which builds Roster and installs SecantusDB); prints what it
injected and what it found, and exits non-zero on any violation.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

from pymongo import MongoClient

HERE = os.path.dirname(os.path.abspath(__file__))
TENANT = "faults"
DB_NAME = "roster_faults"
# 4xx codes a retrying client may see here, each with its reason.
EXPECTED_4XX = {
    "idempotency_key_in_progress",  # a retry while the first attempt still runs
    "idempotency_key_outcome_unknown",  # the first attempt's commit may still land; retried
    "not_a_member",  # a removal retried after it applied
}


def log(msg: str) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Proxy:
    """A TCP proxy to the database that can cut every connection or stall them all."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self.flowing = threading.Event()
        self.flowing.set()
        self.lock = threading.Lock()
        self.socks: set[socket.socket] = set()
        self.server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.server.accept()
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.socks.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self.flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
                with self.lock:
                    self.socks.discard(s)

    def cut(self) -> int:
        with self.lock:
            socks = list(self.socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return len(socks) // 2

    def stall(self, seconds: float) -> None:
        self.flowing.clear()
        time.sleep(seconds)
        self.flowing.set()


class Database:
    def __init__(self, secantusd: str, path: str) -> None:
        self.cmd = [secantusd, "--host", "127.0.0.1", "--port", str(free_port()),
                    "--storage-path", path, "--log-level", "ERROR", "--sync-on-commit"]
        self.port = int(self.cmd[4])
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = MongoClient(self.uri(), serverSelectionTimeoutMS=60_000)
        client.admin.command("ping")
        client.close()

    def kill(self) -> None:
        if self.proc:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"


class Instance:
    def __init__(self, name: str, binary: str, db_uri: str) -> None:
        self.name, self.binary = name, binary
        self.port, self.admin = free_port(), free_port()
        self.env = {
            **os.environ,
            "ROSTER_ENV": "development",
            # (MONGODB_URI, when the caller has one, would replace database.uri.)
            "MONGODB_URI": db_uri,
            "ROSTER__DATABASE__URI": db_uri,
            "ROSTER__DATABASE__NAME": DB_NAME,
            "ROSTER__DATABASE__SERVER_SELECTION_TIMEOUT_MS": "2000",
            "ROSTER__HTTP__BIND": f"127.0.0.1:{self.port}",
            "ROSTER__HTTP__ADMIN_BIND": f"127.0.0.1:{self.admin}",
            "ROSTER__RATE_LIMITS__ENABLED": "false",
            # A key held by a killed instance is taken over after 4 s, not a minute.
            "ROSTER__DATABASE__IDEMPOTENCY_TAKEOVER_MS": "4000",
            "RUST_LOG": "error",
        }
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log = open(os.path.join(tempfile.gettempdir(), f"roster-faults-{self.name}.log"), "ab")
        self.proc = subprocess.Popen([self.binary, "serve"], env=self.env,
                                     stdout=self.log, stderr=self.log)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/healthz", timeout=1)
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
        raise RuntimeError(f"instance {self.name} did not start")

    def kill(self) -> None:
        if self.proc:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


class Answers:
    """Every status the clients saw, and what they were told succeeded."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: Counter = Counter()
        self.violations: list[str] = []
        self.created: dict[str, str] = {}  # creation key → conversation id
        self.added: dict[tuple[str, str], float] = {}  # (conv, user) → when acknowledged
        self.removed: dict[tuple[str, str], float] = {}
        self.unknown = 0  # answers 409 idempotency_key_outcome_unknown (then retried)
        self.replayed = 0  # keyed answers replayed (Idempotent-Replayed)
        self.retries = 0


def call(base: str, method: str, path: str, token: str, body=None, key: str | None = None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Idempotency-Key", key)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null"), dict(r.headers)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            payload = json.loads(raw or b"null")
        except ValueError:
            payload = None
        return e.code, payload, dict(e.headers)
    except (OSError, urllib.error.URLError):
        return None, None, {}


def client(n: int, instances: list[Instance], tokens: dict[str, str], answers: Answers,
           stop: threading.Event) -> None:
    try:
        work(n, instances, tokens, answers, stop)
    except Exception as e:  # a client that fails is a finding, not a silent stop
        with answers.lock:
            answers.violations.append(f"client {n} stopped: {e!r}")


def work(n: int, instances: list[Instance], tokens: dict[str, str], answers: Answers,
         stop: threading.Event) -> None:
    rnd = random.Random(n)
    owner = f"owner{n}"

    def send(method, path, token, body=None, key=None, ok=(200, 201, 204)):
        """Sends until an answer that is not a retry signal; returns (status, body)."""
        deadline = time.time() + 120
        while True:
            base = f"http://127.0.0.1:{rnd.choice(instances).port}"
            status, payload, headers = call(base, method, path, token, body, key)
            code = payload.get("code") if isinstance(payload, dict) else None
            with answers.lock:
                answers.statuses[status if status else "no answer"] += 1
                if status == 500:
                    answers.violations.append(f"500 on {method} {path}: {payload}")
                if status == 503 and not any(h.lower() == "retry-after" for h in headers):
                    answers.violations.append(f"503 without Retry-After on {method} {path}")
                if status and 400 <= status < 500 and status not in (404,) and code not in EXPECTED_4XX:
                    answers.violations.append(f"{status} {code} on {method} {path}")
            unknown = status == 409 and code == "idempotency_key_outcome_unknown"
            retry = unknown or status == 409 and code == "idempotency_key_in_progress"
            if status in ok or status is not None and 400 <= status < 500 and not retry:
                if key and status in ok and any(
                        h.lower() == "idempotent-replayed" for h in headers):
                    with answers.lock:
                        answers.replayed += 1
                return status, payload
            if time.time() > deadline:
                answers.violations.append(f"no answer within 120 s: {method} {path}")
                return None, None
            wait = 0.3
            with answers.lock:
                answers.retries += 1
                if unknown:
                    answers.unknown += 1
                    after = next((v for h, v in headers.items() if h.lower() == "retry-after"), None)
                    if after is None:
                        answers.violations.append(f"409 outcome unknown without Retry-After on {path}")
                    else:
                        wait = min(float(after), 10.0)
            time.sleep(wait)

    conv_n = 0
    while not stop.is_set():
        conv_n += 1
        key = f"conv-{n}-{conv_n}"
        status, body = send("POST", "/v1/conversations", tokens[owner],
                            {"type": "group", "name": key}, key=key)
        if status != 201:
            continue
        conv = body["conversation"]["id"]
        with answers.lock:
            answers.created[key] = conv
        present: list[str] = []
        for m in range(rnd.randint(3, 8)):
            if stop.is_set():
                break
            user = f"u{n}-{conv_n}-{m}"
            status, body = send("POST", f"/v1/conversations/{conv}/members", tokens[owner],
                                {"user_id": user}, key=f"add-{conv}-{user}")
            if status == 201:
                with answers.lock:
                    answers.added[(conv, user)] = time.time()
                present.append(user)
            if present and rnd.random() < 0.25:
                gone = present.pop(rnd.randrange(len(present)))
                status, _ = send("DELETE", f"/v1/conversations/{conv}/members/{gone}",
                                 tokens[owner])
                if status in (200, 204) or status == 404:
                    # 404 not_a_member: a retry after the removal applied.
                    with answers.lock:
                        answers.removed[(conv, gone)] = time.time()


def check(db_uri: str, answers: Answers) -> list[str]:
    found: list[str] = []
    db = MongoClient(db_uri, serverSelectionTimeoutMS=30_000)[DB_NAME]
    convs = {str(c["_id"]): c for c in db.conversations.find({"tenant_id": TENANT})}
    by_name = Counter(c.get("name") for c in convs.values())
    for key, conv in answers.created.items():
        if conv not in convs:
            found.append(f"acknowledged creation {key} ({conv}) is missing")
    for name, count in by_name.items():
        if count > 1:
            found.append(f"creation key {name} made {count} conversations")
    members = list(db.group_members.find({"tenant_id": TENANT}))
    present = {(str(m["conversation_id"]), m["external_user_id"]) for m in members
               if m.get("status") in ("active", "muted")}
    for (conv, user) in answers.added:
        if (conv, user) not in answers.removed and (conv, user) not in present:
            found.append(f"acknowledged add of {user} to {conv} is missing")
    for (conv, user) in answers.removed:
        if (conv, user) in present:
            found.append(f"acknowledged removal of {user} from {conv} did not hold")
    per_conv = Counter(str(m["conversation_id"]) for m in members
                       if m.get("status") in ("active", "muted"))
    owners = Counter(str(m["conversation_id"]) for m in members
                     if m.get("status") in ("active", "muted") and m.get("role") == "owner")
    pairs = Counter((str(m["conversation_id"]), m["external_user_id"]) for m in members)
    for cid, c in convs.items():
        if c.get("member_count") != per_conv.get(cid, 0):
            found.append(f"{cid}: member_count {c.get('member_count')} but {per_conv.get(cid, 0)} present")
        if owners.get(cid, 0) != 1:
            found.append(f"{cid}: {owners.get(cid, 0)} owners")
    for pair, n in pairs.items():
        if n > 1:
            found.append(f"{pair}: {n} memberships")
    return found


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--roster", required=True)
    ap.add_argument("--secantusd", required=True)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--every", type=float, default=5)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="roster-faults-")
    db = Database(args.secantusd, os.path.join(work, "db"))
    instances: list[Instance] = []
    try:
        db.start()
        proxy = Proxy(db.port)
        proxied = f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true"
        env = {**os.environ, "ROSTER_ENV": "development", "MONGODB_URI": db.uri(),
               "ROSTER__DATABASE__URI": db.uri(),
               "ROSTER__DATABASE__NAME": DB_NAME, "RUST_LOG": "error"}
        subprocess.run([args.roster, "tenant", "create", TENANT, "--name", "Faults",
                        "--if-missing"], env=env, check=True, stdout=subprocess.DEVNULL)
        tokens = {}
        for n in range(args.clients):
            tokens[f"owner{n}"] = subprocess.run(
                [args.roster, "token", "--tenant", TENANT, "--user", f"owner{n}", "--ttl", "2h"],
                env=env, check=True, capture_output=True, text=True).stdout.strip()
        instances = [Instance("A", args.roster, proxied), Instance("B", args.roster, proxied)]
        for i in instances:
            i.start()
        log(f"database on :{db.port} (proxy :{proxy.port}), instances A :{instances[0].port} "
            f"and B :{instances[1].port}, {args.clients} clients, {args.seconds:.0f} s")
        answers = Answers()
        stop = threading.Event()
        clients = [threading.Thread(target=client, args=(n, instances, tokens, answers, stop))
                   for n in range(args.clients)]
        for c in clients:
            c.start()
        injected: Counter = Counter()
        # The 9 s stall outlasts the write budget (5 s) and the commit grace (3 s): a commit in
        # flight then is answered write_outcome_unknown; its key answers once the outcome is known.
        faults = ["kill instance A", "kill database", "cut connections", "kill instance B",
                  "stall connections 3 s", "stall connections 9 s"]
        started = time.time()
        turn = 0
        while time.time() - started < args.seconds:
            time.sleep(args.every)
            fault = faults[turn % len(faults)]
            turn += 1
            log(f"{fault} ({len(answers.added)} adds acknowledged so far)")
            if fault.startswith("kill instance"):
                inst = instances[0] if fault.endswith("A") else instances[1]
                inst.kill()
                time.sleep(1)
                inst.start()
            elif fault == "kill database":
                db.kill()
                proxy.cut()
                time.sleep(1)
                db.start()
            elif fault == "cut connections":
                proxy.cut()
            else:
                proxy.stall(float(fault.split()[-2]))
            injected[fault] += 1
        stop.set()
        log("faults over; waiting for the clients' last requests")
        for c in clients:
            c.join(timeout=180)
        found = answers.violations + check(db.uri(), answers)
        if not answers.created or not answers.added:
            found.append("the clients got nothing acknowledged: the run checked nothing")
        total = sum(answers.statuses.values())
        log("injected: " + ", ".join(f"{k} ×{v}" for k, v in sorted(injected.items())))
        log(f"requests: {total} ({', '.join(f'{k}: {v}' for k, v in sorted(answers.statuses.items(), key=str))}); "
            f"retries {answers.retries}; outcome-unknown answers {answers.unknown}; "
            f"replayed {answers.replayed}")
        log(f"acknowledged: {len(answers.created)} conversations, {len(answers.added)} adds, "
            f"{len(answers.removed)} removals")
        if found:
            for f in found[:50]:
                log(f"VIOLATION: {f}")
            log(f"{len(found)} violations")
            return 1
        log("every acknowledged change is there exactly once; counts, owners and memberships "
            "hold; no 500, every 503 had Retry-After")
        return 0
    finally:
        for i in instances:
            i.kill()
        db.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
