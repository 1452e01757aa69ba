"""sink-websocket against the real broker and the shared redis-server, with
clients on the `ws` npm package (tests/integration/ws_client.js, one node
process per connection): who gets what, in which order, resume, auth,
slow clients, two engines fanning out through Redis, shutdown; and frames
over a plain socket (split byte by byte, fragmented with pauses, broken),
where the server makes and frees its wslay contexts."""
import base64
import hashlib
import hmac
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import create_topic, produce, unique

REDIS_URL = os.environ.get("REDIS_URL")
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
WS_CLIENT = Path(__file__).resolve().parent / "ws_client.js"
SECRET = b"ws-test-secret"


def redis(*args):
    assert REDIS_URL, "REDIS_URL not set (build/stack/redis.env)"
    return subprocess.run([REDIS_CLI, "-u", REDIS_URL, "--raw", *map(str, args)], check=True,
                          capture_output=True, text=True, timeout=30).stdout.strip()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(sub, exp_in=600, secret=SECRET, alg="HS256", sign=None, claims=None):
    c = {"sub": sub, "exp": int(time.time()) + exp_in}
    if sub is None:
        del c["sub"]
    c.update(claims or {})
    head = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode()) + "." + \
        b64url(json.dumps(c).encode())
    if sign is not None:
        sig = sign(head.encode())
    elif alg == "none":
        sig = b""
    else:
        sig = hmac.new(secret, head.encode(), hashlib.sha256).digest()
    return head + "." + b64url(sig)


class WsClient:
    """One node `ws` connection; its events arrive as parsed JSON lines."""

    def __init__(self, url, headers=None):
        self.proc = subprocess.Popen(["node", str(WS_CLIENT), url, json.dumps(headers or {})],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.events = []
        self.q = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            ev = json.loads(line)
            self.events.append(ev)
            self.q.put(ev)

    def wait(self, pred, timeout=30, what="event"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for ev in list(self.events):
                if pred(ev):
                    return ev
            time.sleep(0.02)
        raise AssertionError(f"no {what} within {timeout}s; got {str(self.events[-5:])[:1500]}")

    def hello(self, timeout=30):
        return self.wait(lambda e: e["event"] == "message"
                         and e["data"].get("type") == "connectd.hello", timeout, "hello")["data"]

    def closed(self, timeout=30):
        return self.wait(lambda e: e["event"] in ("close", "unexpected-response"), timeout,
                         "close")

    def pushes(self):
        return [e["data"] for e in self.events
                if e["event"] == "message" and "seq" in e["data"]]

    def wait_pushes(self, n, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline and len(self.pushes()) < n:
            time.sleep(0.02)
        return self.pushes()

    def send(self, cmd):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.send("close")
                self.proc.wait(timeout=10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def clients():
    made = []

    def make(url, headers=None):
        c = WsClient(url, headers)
        made.append(c)
        return c

    yield make
    for c in made:
        if c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait()


def ws_pipeline(name, topic, msg_type, **opts):
    sink = {"plugin": "websocket", "listen": "127.0.0.1:0", "jwt_secret": SECRET.decode(),
            "message": {"type": msg_type, "customerId": "${/customerId}", "data": "${/data}"}}
    sink.update(opts)
    return {"name": name, "topics": [topic], "sinks": [sink],
            "errors": {"tolerance": "all"}}


def ws_engine(engines, kafka, pipelines, redis_url=True, kafka_props=None, env=None):
    props = {"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]}
    props.update(kafka_props or {})
    extra = {"redis_url": REDIS_URL} if redis_url else {}
    return engines(props, pipelines, engine_extra=extra, env=env).start()


def ws_port(eng, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = re.findall(r"websocket server listening on 127\.0\.0\.1:(\d+)", eng.logs())
        if m:
            return int(m[-1])
        if eng.proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError("websocket port not logged:\n" + eng.logs()[-3000:])


def event(cust, n, size=0):
    v = {"customerId": cust, "data": {"n": n}}
    if size:
        v["data"]["pad"] = "x" * size
    return cust, json.dumps(v, separators=(",", ":")).encode()


def metric(eng, name):
    text = urllib.request.urlopen(eng.admin_url() + "/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def check_own_contiguous(client, cust, expect_n):
    pushes = client.wait_pushes(expect_n)
    assert len(pushes) == expect_n, f"{cust}: {len(pushes)} of {expect_n}: {pushes[-3:]}"
    assert all(p["customerId"] == cust for p in pushes), f"{cust} got another's event"
    seqs = [p["seq"] for p in pushes]
    assert seqs == list(range(seqs[0], seqs[0] + expect_n)), f"{cust}: seqs {seqs}"
    return pushes


# ---------------------------------------------------------------- tests

@pytest.mark.parametrize("with_redis", [True, False], ids=["redis", "in-process"])
def test_each_client_gets_exactly_its_customers_events_in_order(kafka, engines, clients,
                                                                with_redis):
    """Two pipelines (two sinks, one shared server); two customers with three
    connections each.  Every connection gets exactly its customer's events of
    both topics, per-topic order kept, seqs contiguous from 1."""
    t1, t2 = unique("ws-kyc"), unique("ws-docs")
    for t in (t1, t2):
        create_topic(kafka, t, 3)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    eng = ws_engine(engines, kafka, {
        "a": ws_pipeline("ws-a", t1, "KYC_VERIFIED", key_prefix=prefix),
        "b": ws_pipeline("ws-b", t2, "DOCUMENTS_PROCESSED", key_prefix=prefix)},
        redis_url=with_redis)
    port = ws_port(eng)
    assert len(re.findall("websocket server listening", eng.logs())) == 1, "one shared server"
    custs = [unique("c"), unique("c")]
    conns = {c: [clients(f"ws://127.0.0.1:{port}/ws?token={jwt(c)}") for _ in range(2)]
             for c in custs}
    # The third: the token in the Authorization header.
    for c in custs:
        conns[c].append(clients(f"ws://127.0.0.1:{port}/ws",
                                {"Authorization": f"Bearer {jwt(c)}"}))
    for c in custs:
        for cl in conns[c]:
            h = cl.hello()
            assert h["customerId"] == c and h["lastSeq"] == 0 and h["resumeFrom"] == 0
            assert re.fullmatch(r"[0-9a-f]{16}-\d+", h["connectionId"]), h
    if with_redis:
        ids = {cl.hello()["connectionId"] for cl in conns[custs[0]]}
        assert set(redis("SMEMBERS", f"{prefix}customer:{custs[0]}").split("\n")) == ids
        one = next(iter(ids))
        assert redis("GET", f"{prefix}connection:{one}") == custs[0]
        assert 86000 < int(redis("TTL", f"{prefix}connection:{one}")) <= 86400
    n = 15
    for t in (t1, t2):
        produce(kafka, t, [event(custs[i % 2], i) for i in range(2 * n)])
    for c in custs:
        for cl in conns[c]:
            pushes = check_own_contiguous(cl, c, 2 * n)
            assert pushes[0]["seq"] == 1
            for typ in ("KYC_VERIFIED", "DOCUMENTS_PROCESSED"):
                ns = [p["data"]["n"] for p in pushes if p["type"] == typ]
                assert ns == sorted(ns) and len(ns) == n, (typ, ns)
            assert list(pushes[0])[0] == "seq", "seq is the first member"
        # All connections of one customer saw the same sequence.
        assert conns[c][0].pushes() == conns[c][1].pushes() == conns[c][2].pushes()
    assert metric(eng, "sink_websocket_connections") == 6
    assert metric(eng, "sink_websocket_messages_delivered_total") >= 6 * 2 * n
    for c in custs:
        for cl in conns[c]:
            cl.stop()
    if with_redis:
        deadline = time.time() + 10
        while time.time() < deadline and redis("EXISTS", f"{prefix}customer:{custs[0]}") != "0":
            time.sleep(0.05)
        assert redis("EXISTS", f"{prefix}customer:{custs[0]}") == "0", "registry not cleaned"
    assert eng.stop() == 0


def test_bad_tokens_get_401_with_a_reason(kafka, engines, clients, tmp_path):
    topic = unique("ws-auth")
    create_topic(kafka, topic, 1)
    eng = ws_engine(engines, kafka, {"a": ws_pipeline("ws-auth", topic, "T")})
    port = ws_port(eng)
    url = f"ws://127.0.0.1:{port}/ws"
    cases = {
        "missing": (url, None, "no token"),
        "expired": (url + "?token=" + jwt("c1", exp_in=-10), None, "expired"),
        "wrong key": (url + "?token=" + jwt("c1", secret=b"other"), None, "does not verify"),
        "alg none": (url + "?token=" + jwt("c1", alg="none"), None, "not accepted"),
        "alg RS256": (url + "?token=" + jwt("c1", alg="RS256"), None, "not accepted"),
        "no sub": (url + "?token=" + jwt(None), None, "no sub"),
        "bad header": (url, {"Authorization": "Bearer " + jwt("c1", secret=b"x")},
                       "does not verify"),
    }
    for name, (u, headers, why) in cases.items():
        cl = clients(u, headers)
        ev = cl.closed()
        assert ev["event"] == "unexpected-response" and ev["status"] == 401, (name, ev)
        body = json.loads(ev["body"])
        assert why in body["error"], (name, body)
        assert ev["headers"]["content-type"] == "application/json"
        assert ev["headers"]["www-authenticate"].startswith("Bearer")
    assert metric(eng, "sink_websocket_auth_failures_total") == len(cases)
    # A good one still gets in.
    ok = clients(url + "?token=" + jwt("c1"))
    assert ok.hello()["customerId"] == "c1"
    ok.stop()
    # Served by the same server: the browser client, embedded in the .so.
    js = urllib.request.urlopen(f"http://127.0.0.1:{port}/connectd-ws.js", timeout=10)
    src = js.read().decode()
    assert js.headers["Content-Type"].startswith("text/javascript")
    assert src == (Path(__file__).resolve().parents[2] / "plugins" / "sink-websocket" /
                   "client" / "connectd-ws.js").read_text()
    assert eng.stop() == 0


def test_rs256_tokens_verify_with_the_public_key(kafka, engines, clients, tmp_path):
    priv, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", str(priv)], check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", str(priv), "-pubout", "-out", str(pub)],
                   check=True, capture_output=True)

    def rs_sign(data):
        return subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(priv)], input=data,
                              check=True, capture_output=True).stdout

    topic = unique("ws-rs")
    create_topic(kafka, topic, 1)
    p = ws_pipeline("ws-rs", topic, "T", jwt_public_key="${file:" + str(pub) + "}")
    del p["sinks"][0]["jwt_secret"]
    eng = ws_engine(engines, kafka, {"a": p})
    port = ws_port(eng)
    good = clients(f"ws://127.0.0.1:{port}/ws?token={jwt('c-rs', alg='RS256', sign=rs_sign)}")
    assert good.hello()["customerId"] == "c-rs"
    # The public key used as an HMAC secret: refused (alg mismatch).
    forged = jwt("c-rs", alg="HS256", secret=pub.read_bytes())
    ev = clients(f"ws://127.0.0.1:{port}/ws?token={forged}").closed()
    assert ev["status"] == 401 and "not accepted" in json.loads(ev["body"])["error"]
    produce(kafka, topic, [event("c-rs", 1)])
    assert good.wait_pushes(1)[0]["data"] == {"n": 1}
    good.stop()
    assert eng.stop() == 0


def test_a_client_on_engine_a_gets_what_engine_b_consumed(kafka, engines, clients):
    """Engine A only holds sockets (its pipeline reads an idle topic); engine
    B consumes the events.  Redis pub/sub carries them to A's client."""
    idle, busy = unique("ws-idle"), unique("ws-busy")
    for t in (idle, busy):
        create_topic(kafka, t, 3)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    a = ws_engine(engines, kafka, {"a": ws_pipeline("ws-hold", idle, "T", key_prefix=prefix)})
    b = ws_engine(engines, kafka, {"b": ws_pipeline("ws-push", busy, "T", key_prefix=prefix)})
    pa, pb = ws_port(a), ws_port(b)
    cust = unique("c")
    on_a = clients(f"ws://127.0.0.1:{pa}/ws?token={jwt(cust)}")
    on_b = clients(f"ws://127.0.0.1:{pb}/ws?token={jwt(cust)}")
    on_a.hello()
    on_b.hello()
    produce(kafka, busy, [event(cust, i) for i in range(20)])
    pushes_a = check_own_contiguous(on_a, cust, 20)
    pushes_b = check_own_contiguous(on_b, cust, 20)
    assert pushes_a == pushes_b
    assert [p["data"]["n"] for p in pushes_a] == list(range(20))
    assert metric(a, "sink_websocket_pushes_total") == 0, "A consumed nothing"
    assert metric(b, "sink_websocket_pushes_total") == 20
    assert int(redis("GET", f"{prefix}seq:{cust}")) == 20
    assert redis("LLEN", f"{prefix}replay:{cust}") == "20"
    on_a.stop()
    on_b.stop()
    assert a.stop() == 0 and b.stop() == 0


@pytest.mark.parametrize("with_redis", [True, False], ids=["redis", "in-process"])
def test_resume_with_since_gets_exactly_the_missed_messages(kafka, engines, clients,
                                                            with_redis):
    topic = unique("ws-resume")
    create_topic(kafka, topic, 1)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    eng = ws_engine(engines, kafka, {"a": ws_pipeline("ws-resume", topic, "T",
                                                      key_prefix=prefix, replay_size=50)},
                    redis_url=with_redis)
    port = ws_port(eng)
    cust = unique("c")
    url = f"ws://127.0.0.1:{port}/ws?token={jwt(cust)}"
    watcher = clients(url)  # connected throughout: tells when pushes happened
    first = clients(url)
    watcher.hello()
    first.hello()
    produce(kafka, topic, [event(cust, i) for i in range(5)])
    assert [p["seq"] for p in first.wait_pushes(5)] == [1, 2, 3, 4, 5]
    first.stop()
    assert first.closed()["code"] == 1000
    produce(kafka, topic, [event(cust, i) for i in range(5, 12)])
    assert len(watcher.wait_pushes(12)) == 12
    again = clients(url + "&since=5")
    h = again.hello()
    assert h["lastSeq"] == 12 and h["resumeFrom"] == 5
    # The hello first, then exactly 6..12 replayed.
    replayed = again.wait_pushes(7)
    msgs = [e["data"] for e in again.events if e["event"] == "message"]
    assert msgs[0]["type"] == "connectd.hello"
    assert [p["seq"] for p in replayed] == list(range(6, 13))
    assert [p["data"]["n"] for p in replayed] == list(range(5, 12))
    # Then live ones, no duplicate, no gap.
    produce(kafka, topic, [event(cust, i) for i in range(12, 15)])
    assert [p["seq"] for p in again.wait_pushes(10)] == list(range(6, 16))
    time.sleep(0.3)
    assert len(again.pushes()) == 10
    # A resume point ahead of the counter (it started again) replays all kept.
    ahead = clients(url + "&since=999")
    h = ahead.hello()
    assert h["lastSeq"] == 15 and h["resumeFrom"] == 0
    assert [p["seq"] for p in ahead.wait_pushes(15)] == list(range(1, 16))
    # Without since: live only, from the counter on.
    fresh = clients(url)
    h = fresh.hello()
    assert h["lastSeq"] == 15 and h["resumeFrom"] == 15
    produce(kafka, topic, [event(cust, 15)])
    assert [p["seq"] for p in fresh.wait_pushes(1)] == [16]
    for c in (watcher, again, ahead, fresh):
        c.stop()
    assert eng.stop() == 0


@pytest.mark.parametrize("missed_first", [False, True])
def test_a_counter_that_starts_again_closes_live_sockets_1012_and_they_resume(
        kafka, engines, clients, missed_first):
    """A Redis restarted without its data starts each customer's counter at
    1 again. A live socket that already had more cannot tell what it missed:
    it is closed with 1012, and resuming with since gets what is kept (it
    used to drop every message until the counter passed its old value).
    missed_first: seq 1 went out while nobody listened (the engine's
    subscriber was still reconnecting), so the socket's first sight of the
    new counter is seq 2."""
    topic = unique("ws-reset")
    create_topic(kafka, topic, 1)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    eng = ws_engine(engines, kafka, {"a": ws_pipeline("ws-reset", topic, "T",
                                                      key_prefix=prefix, replay_size=50)})
    port = ws_port(eng)
    cust = unique("c")
    url = f"ws://127.0.0.1:{port}/ws?token={jwt(cust)}"
    live = clients(url)
    live.hello()
    produce(kafka, topic, [event(cust, i) for i in range(3)])
    assert [p["seq"] for p in live.wait_pushes(3)] == [1, 2, 3]
    redis("DEL", f"{prefix}seq:{cust}", f"{prefix}replay:{cust}")  # what a restart loses
    first = 1
    if missed_first:
        redis("INCR", f"{prefix}seq:{cust}")
        first = 2
    produce(kafka, topic, [event(cust, 3)])
    ev = live.closed()
    assert ev["code"] == 1012, ev
    again = clients(url + "&since=3")
    h = again.hello()
    assert h["lastSeq"] == first and h["resumeFrom"] == 0, h
    assert [p["data"]["n"] for p in again.wait_pushes(1)] == [3]
    produce(kafka, topic, [event(cust, 4)])
    assert [p["seq"] for p in again.wait_pushes(2)] == [first, first + 1]
    again.stop()
    assert eng.stop() == 0


def test_keepalive_pings_refresh_the_registry_and_idle_sockets_close(kafka, engines, clients):
    topic = unique("ws-ping")
    create_topic(kafka, topic, 1)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    eng = ws_engine(engines, kafka, {"a": ws_pipeline("ws-ping", topic, "T", key_prefix=prefix,
                                                      ping_interval_ms=100,
                                                      idle_timeout_ms=600)})
    port = ws_port(eng)
    cust = unique("c")
    url = f"ws://127.0.0.1:{port}/ws?token={jwt(cust)}"
    alive, idle = clients(url), clients(url)
    conn_id = alive.hello()["connectionId"]
    idle.hello()
    # Shorten the TTLs: the next pong puts them back to 24 h.
    redis("EXPIRE", f"{prefix}customer:{cust}", 50)
    redis("EXPIRE", f"{prefix}connection:{conn_id}", 50)
    idle.send("pause")  # no pongs from here on
    deadline = time.time() + 10
    while time.time() < deadline and int(redis("TTL", f"{prefix}connection:{conn_id}")) < 86000:
        time.sleep(0.05)
    assert int(redis("TTL", f"{prefix}connection:{conn_id}")) > 86000
    assert int(redis("TTL", f"{prefix}customer:{cust}")) > 86000
    time.sleep(1.2)  # two idle timeouts
    idle.send("resume")
    ev = idle.closed()
    assert ev["event"] == "close" and ev["code"] == 1000 and ev["reason"] == "idle timeout", ev
    # The one answering pings is still there and still gets pushes.
    assert alive.proc.poll() is None
    produce(kafka, topic, [event(cust, 1)])
    assert alive.wait_pushes(1)[0]["seq"] == 1
    assert metric(eng, "sink_websocket_connections") == 1
    alive.stop()
    assert eng.stop() == 0


def test_plain_requests_and_the_connection_limit_are_answered_before_the_upgrade(
        kafka, engines, clients):
    topic = unique("ws-limit")
    create_topic(kafka, topic, 1)
    eng = ws_engine(engines, kafka, {"a": ws_pipeline("ws-limit", topic, "T",
                                                      max_connections=2)})
    port = ws_port(eng)

    def get(path, headers=None):
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    status, headers, body = get("/ws")
    assert status == 426 and headers["Upgrade"] == "websocket", (status, body)
    assert "must be a WebSocket upgrade" in json.loads(body)["error"]
    status, _, body = get("/nope")
    assert status == 404 and "error" in json.loads(body)
    url = f"ws://127.0.0.1:{port}/ws?token={jwt('c-lim')}"
    first, second = clients(url), clients(url)
    first.hello()
    second.hello()
    third = clients(url).closed()
    assert third["event"] == "unexpected-response" and third["status"] == 503, third
    assert json.loads(third["body"])["error"] == "too many connections"
    assert third["headers"]["retry-after"] == "1"
    bad_since = clients(f"ws://127.0.0.1:{port}/ws?token={jwt('c-x')}&since=abc").closed()
    assert bad_since["status"] == 400, bad_since  # checked before the limit
    assert "since must be a sequence number" in json.loads(bad_since["body"])["error"]
    first.stop()
    deadline = time.time() + 10
    while time.time() < deadline and metric(eng, "sink_websocket_connections") > 1:
        time.sleep(0.05)
    again = clients(url)
    assert again.hello()["customerId"] == "c-lim"
    for c in (second, again):
        c.stop()
    assert eng.stop() == 0


def test_a_replay_larger_than_the_send_queue_bound_still_resumes(kafka, engines, clients):
    topic = unique("ws-bigreplay")
    create_topic(kafka, topic, 1)
    eng = ws_engine(engines, kafka, {"a": ws_pipeline("ws-bigreplay", topic, "T",
                                                      max_send_queue_bytes=4096)})
    port = ws_port(eng)
    cust = unique("c")
    url = f"ws://127.0.0.1:{port}/ws?token={jwt(cust)}"
    watcher = clients(url)
    watcher.hello()
    # One at a time: a burst of pushes is queued in one go, and 4 kB is a
    # bound a burst of two would pass.
    for i in range(6):
        produce(kafka, topic, [event(cust, i, 3500)])
        assert len(watcher.wait_pushes(i + 1)) == i + 1
    late = clients(url + "&since=0")  # 21 kB of replay, five times the bound
    assert [p["seq"] for p in late.wait_pushes(6)] == list(range(1, 7))
    produce(kafka, topic, [event(cust, 6, 3500)])
    assert [p["seq"] for p in late.wait_pushes(7)][-1] == 7
    assert metric(eng, "sink_websocket_slow_client_closes_total") == 0
    for c in (watcher, late):
        c.stop()
    assert eng.stop() == 0


def test_a_client_that_stops_reading_is_closed_1008_and_memory_stays_bounded(kafka, engines,
                                                                             clients):
    topic = unique("ws-slow")
    create_topic(kafka, topic, 1)
    eng = ws_engine(engines, kafka,
                    {"a": ws_pipeline("ws-slow", topic, "T", max_send_queue_bytes=262144,
                                      replay_size=10)},
                    kafka_props={"queued.max.messages.kbytes": "2048",
                                 "fetch.max.bytes": "1048576",
                                 "max.partition.fetch.bytes": "1048576"},
                    # Under the sanitizer build, freed memory would sit in
                    # ASan's quarantine and count as RSS.
                    env={"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "")
                         + ":quarantine_size_mb=0:thread_local_quarantine_size_kb=0"})
    port = ws_port(eng)
    cust = unique("c")
    url = f"ws://127.0.0.1:{port}/ws?token={jwt(cust)}"
    slow = clients(url)
    slow.hello()
    rss = lambda: int(re.search(r"VmRSS:\s+(\d+) kB",
                                Path(f"/proc/{eng.proc.pid}/status").read_text()).group(1))
    before = rss()
    slow.send("pause")
    time.sleep(0.2)
    n, size = 800, 64 * 1024  # 50 MiB for a client that reads nothing

    def producer():
        for start in range(0, n, 100):
            produce(kafka, topic, [event(cust, i, size) for i in range(start, start + 100)])

    t = threading.Thread(target=producer)
    t.start()
    # Once the server gave up on it, the client reads again: the 1008 close
    # frame is behind what was queued (the engine drops a closed stream's
    # queue that is not read within 5 s).
    deadline = time.time() + 120
    while time.time() < deadline and \
            metric(eng, "sink_websocket_slow_client_closes_total") < 1:
        time.sleep(0.05)
    slow.send("resume")
    ev = slow.closed()
    assert ev["event"] == "close" and ev["code"] == 1008, ev
    assert len(slow.pushes()) < n
    t.join()
    deadline = time.time() + 120
    while time.time() < deadline and metric(eng, "sink_websocket_pushes_total") < n:
        time.sleep(0.1)
    assert metric(eng, "sink_websocket_pushes_total") == n
    grown = rss() - before
    assert grown < 20 * 1024, f"RSS grew by {grown} kB with a client that read nothing"
    assert metric(eng, "sink_websocket_slow_client_closes_total") == 1
    # The server goes on: a new client resumes from the replay.
    again = clients(url + f"&since={n - 3}")
    assert [p["seq"] for p in again.wait_pushes(3)] == [n - 2, n - 1, n]
    again.stop()
    assert eng.stop() == 0


def test_records_without_a_customer_or_an_object_message_are_dead_lettered(kafka, engines,
                                                                          clients):
    topic = unique("ws-bad")
    dlq = topic + ".dlq"
    for t in (topic, dlq):
        create_topic(kafka, t, 1)
    p = ws_pipeline("ws-bad", topic, "T")
    p["sinks"][0]["message"] = "${/payload}"
    p["errors"] = {"tolerance": "all", "dead_letter_topic": dlq}
    eng = ws_engine(engines, kafka, {"a": p})
    port = ws_port(eng)
    cl = clients(f"ws://127.0.0.1:{port}/ws?token={jwt('c-ok')}")
    cl.hello()
    produce(kafka, topic, [
        ("k", b'{"payload":{"x":1}}'),                          # no customerId
        ("k", b'{"customerId":"c-ok","payload":[1,2]}'),         # not an object
        ("k", b'{"customerId":{"id":1},"payload":{"x":2}}'),     # customer not a string
        ("k", b'{"customerId":"c-ok","payload":{"x":3}}'),       # fine
    ])
    assert [p["x"] for p in cl.wait_pushes(1)] == [3]
    from conftest import kcat
    deadline = time.time() + 60
    out = ""
    while time.time() < deadline:
        out = kcat(["-b", kafka["KAFKA_BOOTSTRAP"], "-C", "-t", dlq, "-o", "beginning", "-e",
                    "-q", "-f", "%h\n"], check=False).stdout.decode(errors="replace")
        if out.count("\n") >= 3:
            break
        time.sleep(0.5)
    assert out.count("\n") == 3, out
    assert "customer /customerId" in out and "not a JSON object" in out
    cl.stop()
    assert eng.stop() == 0


def test_shutdown_sends_1001_to_every_client(kafka, engines, clients):
    topic = unique("ws-bye")
    create_topic(kafka, topic, 1)
    eng = ws_engine(engines, kafka, {"a": ws_pipeline("ws-bye1", topic, "T"),
                                     "b": ws_pipeline("ws-bye2", topic, "U")})
    port = ws_port(eng)
    cls = [clients(f"ws://127.0.0.1:{port}/ws?token={jwt(f'c{i}')}") for i in range(3)]
    for c in cls:
        c.hello()
    assert eng.stop() == 0
    for c in cls:
        ev = c.closed()
        assert ev["event"] == "close" and ev["code"] == 1001, ev


# ------------------------------------------- frames over a plain socket
#
# A connection holds a wslay context only while it has protocol work in
# progress (plugins/sink-websocket/websocket_server.c): these tests send what
# the `ws` package will not (frames split byte by byte, fragments with pauses
# between them, broken frames) and watch sink_websocket_protocol_contexts,
# the number of connections holding one.

CONTEXTS = "sink_websocket_protocol_contexts"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def frame(opcode, payload=b"", fin=True, mask=True, rsv=0, length_form=None):
    """A client frame (RFC 6455 section 5.2); length_form 16 or 64 forces
    that length form whatever the payload's length (broken framing)."""
    n = len(payload)
    m = 0x80 if mask else 0
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    if length_form == 64 or (length_form is None and n >= 65536):
        head += bytes([m | 127]) + n.to_bytes(8, "big")
    elif length_form == 16 or (length_form is None and n >= 126):
        head += bytes([m | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([m | n])
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_payload(code, reason=b""):
    return code.to_bytes(2, "big") + reason


class RawWs:
    """A WebSocket client on a plain socket: the upgrade and the frames are
    written and read here.  The server's pings are counted and, while
    answer_pings is set, answered."""

    def __init__(self, port, token, answer_pings=False):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            assert chunk, f"closed during the upgrade: {self.buf!r}"
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        assert lines[0].startswith("HTTP/1.1 101 "), lines
        headers = dict((k.strip().lower(), v.strip())
                       for k, v in (line.split(":", 1) for line in lines[1:]))
        want = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        assert headers["sec-websocket-accept"] == want, headers
        self.answer_pings = answer_pings
        self.pings = 0

    def send(self, data, step=None, gap=0.0):
        """data in one write, or in writes of step bytes gap seconds apart
        (TCP_NODELAY: each one its own segment, and its own read)."""
        if step is None:
            self.sock.sendall(data)
            return
        for i in range(0, len(data), step):
            self.sock.sendall(data[i:i + step])
            time.sleep(gap)

    def _take(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"the server closed the connection ({self.buf!r} left)")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frame(self):
        """The next frame: (fin, opcode, payload)."""
        b0, b1 = self._take(2)
        assert not b1 & 0x80, "a server frame is masked"
        assert not b0 & 0x70, f"reserved bits set: {b0:#x}"
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(self._take(2), "big")
        elif n == 127:
            n = int.from_bytes(self._take(8), "big")
        return bool(b0 & 0x80), b0 & 0x0F, self._take(n)

    def next(self):
        """The next frame other than a ping from the server."""
        while True:
            fin, op, payload = self.frame()
            if op != OP_PING:
                return fin, op, payload
            self.pings += 1
            if self.answer_pings:
                self.send(frame(OP_PONG, payload))

    def message(self):
        fin, op, payload = self.next()
        assert fin and op == OP_TEXT, (fin, op, payload[:200])
        return json.loads(payload)

    def close_frame(self):
        """The server's close frame: (code or None, reason)."""
        fin, op, payload = self.next()
        assert fin and op == OP_CLOSE, (fin, op, payload[:200])
        if not payload:
            return None, ""
        return int.from_bytes(payload[:2], "big"), payload[2:].decode()

    def eof(self):
        """Reads to the end of the connection; the frames read meanwhile."""
        frames = []
        while True:
            try:
                frames.append(self.frame())
            except EOFError:
                assert self.buf == b"", f"a partial frame before the end: {self.buf!r}"
                return frames

    def close(self):
        self.sock.close()


def wait_metric(eng, name, want, timeout=15):
    deadline = time.time() + timeout
    while True:
        got = metric(eng, name)
        if got == want or time.time() > deadline:
            break
        time.sleep(0.02)
    assert got == want, f"{name} is {got}, expected {want}"


def raw_engine(engines, kafka, tag, redis_url=False, **opts):
    topic = unique(tag)
    create_topic(kafka, topic, 1)
    eng = ws_engine(engines, kafka, {"a": ws_pipeline(tag, topic, "T", **opts)},
                    redis_url=redis_url)
    return eng, topic, ws_port(eng)


def test_a_frame_split_byte_by_byte_keeps_its_context_until_it_is_whole(kafka, engines):
    eng, topic, port = raw_engine(engines, kafka, "ws-split")
    cust = unique("c")
    ws = RawWs(port, jwt(cust))
    assert ws.message()["type"] == "connectd.hello"
    wait_metric(eng, CONTEXTS, 0)  # the hello's context is gone with it
    # 300 bytes (the 16-bit length form) of two-byte characters, a read each.
    text = frame(OP_TEXT, ("é" * 150).encode())
    ws.send(text[:3], step=1, gap=0.005)  # part of the header
    wait_metric(eng, CONTEXTS, 1)
    ws.send(text[3:151], step=1, gap=0.002)  # the mask, part of the payload
    assert metric(eng, CONTEXTS) == 1
    # A push meanwhile goes out through the same context, and the frame
    # being read goes on where it was.
    produce(kafka, topic, [event(cust, 1)])
    push = ws.message()
    assert push["seq"] == 1 and push["data"] == {"n": 1}, push
    assert metric(eng, CONTEXTS) == 1
    ws.send(text[151:] + frame(OP_PING, b"p-1"), step=1, gap=0.002)
    assert ws.next() == (True, OP_PONG, b"p-1")
    wait_metric(eng, CONTEXTS, 0)
    # Binary too, then a text split in two writes: nothing to say back but
    # the pong after them.
    ws.send(frame(OP_BINARY, bytes(range(256)) * 4), step=7, gap=0.001)
    two = frame(OP_TEXT, b'{"hello":"server"}')
    ws.send(two[:5])
    time.sleep(0.1)
    assert metric(eng, CONTEXTS) == 1
    ws.send(two[5:] + frame(OP_PING, b"p-2"))
    assert ws.next() == (True, OP_PONG, b"p-2")
    wait_metric(eng, CONTEXTS, 0)
    # Pushes to the idle connection: a context each, none left.
    produce(kafka, topic, [event(cust, n) for n in range(2, 6)])
    assert [ws.message()["seq"] for _ in range(4)] == [2, 3, 4, 5]
    wait_metric(eng, CONTEXTS, 0)
    # Invalid UTF-8 split across reads is still seen: 1007, then the end.
    bad = frame(OP_TEXT, b"ok \xc3(")
    ws.send(bad, step=1, gap=0.002)
    assert ws.close_frame()[0] == 1007
    assert ws.eof() == []
    ws.close()
    wait_metric(eng, "sink_websocket_connections", 0)
    wait_metric(eng, CONTEXTS, 0)
    assert eng.stop() == 0


def test_a_fragmented_message_with_pauses_between_its_frames(kafka, engines):
    """Pings every 100 ms: the server's pings go out through the context the
    half-read message keeps."""
    eng, topic, port = raw_engine(engines, kafka, "ws-frag", ping_interval_ms=100,
                                  idle_timeout_ms=5000)
    cust = unique("c")
    ws = RawWs(port, jwt(cust))
    assert ws.message()["type"] == "connectd.hello"
    wait_metric(eng, CONTEXTS, 0)
    # "é" split between two fragments: only one context across the pauses
    # sees one valid message.
    ws.send(frame(OP_TEXT, b"fragmented \xc3", fin=False))
    time.sleep(0.35)
    assert metric(eng, CONTEXTS) == 1
    ws.send(frame(OP_PING, b"between"))  # a control frame between fragments
    assert ws.next() == (True, OP_PONG, b"between")
    ws.send(frame(OP_CONT, b"\xa9 and", fin=False), step=2, gap=0.01)
    time.sleep(0.35)
    produce(kafka, topic, [event(cust, 1)])
    assert ws.message()["seq"] == 1
    assert metric(eng, CONTEXTS) == 1
    ws.send(frame(OP_CONT, b" done"))
    ws.send(frame(OP_PING, b"after"))
    assert ws.next() == (True, OP_PONG, b"after")
    wait_metric(eng, CONTEXTS, 0)
    assert ws.pings >= 5, ws.pings  # they came during the pauses
    # The same with invalid UTF-8 across the fragments: 1007 (a context
    # made afresh would have seen a continuation out of sequence: 1002).
    ws.send(frame(OP_TEXT, b"\xc3", fin=False))
    time.sleep(0.3)
    ws.send(frame(OP_CONT, b"("))
    assert ws.close_frame()[0] == 1007
    ws.eof()
    ws.close()
    wait_metric(eng, "sink_websocket_connections", 0)
    wait_metric(eng, CONTEXTS, 0)
    assert eng.stop() == 0


def test_an_idle_connection_answers_pings_and_its_pongs_refresh_the_registry(kafka, engines):
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    eng, topic, port = raw_engine(engines, kafka, "ws-rawping", redis_url=True,
                                  key_prefix=prefix, ping_interval_ms=150, idle_timeout_ms=1000)
    cust = unique("c")
    ws = RawWs(port, jwt(cust), answer_pings=True)
    conn_id = ws.message()["connectionId"]
    redis("EXPIRE", f"{prefix}connection:{conn_id}", 50)
    redis("EXPIRE", f"{prefix}customer:{cust}", 50)
    # Answered for 2.5 s (more than two idle timeouts): it stays open.
    deadline = time.time() + 2.5
    pongs = 0
    while time.time() < deadline:
        fin, op, payload = ws.frame()
        assert (fin, op) == (True, OP_PING), (fin, op, payload)
        ws.send(frame(OP_PONG, payload), step=1, gap=0.001)  # even a pong split up
        pongs += 1
    assert pongs >= 10, pongs
    assert int(redis("TTL", f"{prefix}connection:{conn_id}")) > 86000
    assert int(redis("TTL", f"{prefix}customer:{cust}")) > 86000
    wait_metric(eng, CONTEXTS, 0)
    # The client's own ping on the idle connection.
    ws.send(frame(OP_PING, b"are you there"))
    assert ws.next() == (True, OP_PONG, b"are you there")
    # Pushes through Redis to the idle connection.
    produce(kafka, topic, [event(cust, n) for n in range(3)])
    assert [ws.message()["seq"] for _ in range(3)] == [1, 2, 3]
    wait_metric(eng, CONTEXTS, 0)
    assert metric(eng, "sink_websocket_connections") == 1
    # Unanswered, it is closed after idle_timeout_ms.
    ws.answer_pings = False
    assert ws.close_frame() == (1000, "idle timeout")
    ws.eof()
    ws.close()
    wait_metric(eng, "sink_websocket_connections", 0)
    wait_metric(eng, CONTEXTS, 0)
    assert eng.stop() == 0


def test_the_close_handshake_echoes_the_clients_close_then_ends(kafka, engines):
    eng, topic, port = raw_engine(engines, kafka, "ws-rawclose")
    ws = RawWs(port, jwt(unique("c")))
    ws.message()
    bye = frame(OP_CLOSE, close_payload(4000, b"bye now"))
    ws.send(bye[:4])
    time.sleep(0.1)
    assert metric(eng, CONTEXTS) == 1  # half a close frame
    ws.send(bye[4:])
    assert ws.close_frame() == (4000, "bye now")
    assert ws.eof() == []
    ws.close()
    # A close without a code is answered without one.
    ws = RawWs(port, jwt(unique("c")))
    ws.message()
    ws.send(frame(OP_CLOSE))
    assert ws.close_frame() == (None, "")
    assert ws.eof() == []
    ws.close()
    wait_metric(eng, "sink_websocket_connections", 0)
    wait_metric(eng, CONTEXTS, 0)
    # Shutdown: 1001 to an idle connection.
    ws = RawWs(port, jwt(unique("c")))
    ws.message()
    wait_metric(eng, CONTEXTS, 0)
    stopped = []
    stopper = threading.Thread(target=lambda: stopped.append(eng.stop()))
    stopper.start()
    assert ws.close_frame() == (1001, "server shutting down")
    ws.eof()
    ws.close()
    stopper.join(60)
    assert stopped == [0]


def test_broken_frames_close_with_1002_1007_1009_or_end_the_connection(kafka, engines):
    """wslay's checks, whatever the reads they arrive in: each case on a
    fresh connection, after a good frame, in one write and again byte by
    byte."""
    eng, topic, port = raw_engine(engines, kafka, "ws-broken")
    text = frame(OP_TEXT, b"fine")
    cases = [
        ("unmasked", frame(OP_TEXT, b"hi", mask=False), 1002),
        ("reserved bit", frame(OP_TEXT, b"hi", rsv=4), 1002),
        ("reserved opcode", frame(0x3, b"hi"), 1002),
        ("continuation first", frame(OP_CONT, b"hi"), 1002),
        ("text inside a fragmented message", frame(OP_TEXT, b"a", fin=False) + text, 1002),
        ("close code 1005", frame(OP_CLOSE, close_payload(1005)), 1002),
        ("invalid UTF-8", frame(OP_TEXT, b"\xff\xfe"), 1007),
        ("a 5000-byte message", frame(OP_BINARY, b"x" * 5000), 1009),
        ("fragments over 4096 bytes",
         frame(OP_BINARY, b"x" * 3000, fin=False) + frame(OP_CONT, b"x" * 3000), 1009),
        # Framing that cannot be read: the end, without a close frame.
        ("a fragmented ping", frame(OP_PING, b"p", fin=False), None),
        ("a 126-byte ping", frame(OP_PING, b"p" * 126), None),
        ("a 5-byte length in the 16-bit form", frame(OP_TEXT, b"hello", length_form=16), None),
        ("a 200-byte length in the 64-bit form", frame(OP_TEXT, b"h" * 200, length_form=64), None),
    ]
    runs = [(name, data, code, step) for name, data, code in cases for step in (None, 1)]
    # wslay checks a close reason's UTF-8 from the third byte of each piece
    # it is handed rather than of the payload, so a close frame read byte by
    # byte goes unchecked (and is echoed): this one in one read only.
    runs.append(("invalid UTF-8 close reason",
                 frame(OP_CLOSE, close_payload(1000, b"\xc3(")), 1007, None))
    for name, data, code, step in runs:
        ws = RawWs(port, jwt(unique("c")))
        assert ws.message()["type"] == "connectd.hello"
        # Byte by byte as far as the fault (or 64 bytes into the case), the
        # rest in one write: the server lingers only a second after closing.
        ws.send(text + data[:64], step=step, gap=0.002)
        if data[64:]:
            ws.send(data[64:])
        if code is None:
            frames = ws.eof()
            assert all(op != OP_CLOSE for _, op, _ in frames), (name, step, frames)
        else:
            got = ws.close_frame()
            assert got[0] == code, (name, step, got)
            assert ws.eof() == [], (name, step)
        ws.close()
    wait_metric(eng, "sink_websocket_connections", 0)
    wait_metric(eng, CONTEXTS, 0)
    assert eng.stop() == 0


# ------------------------------------------------------ API Gateway mode

class FakeManagementApi:
    """A stand-in for API Gateway's @connections endpoint: records each POST
    (path as sent, Authorization, body) and answers by the connection id's
    first word: live -> 200, gone -> 410, flaky -> 500 once then 200."""

    SIG = re.compile(r"AWS4-HMAC-SHA256 Credential=[A-Za-z0-9]+/\d{8}/(?P<region>[a-z0-9-]+)/"
                     r"execute-api/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
                     r"Signature=[0-9a-f]{64}$")

    def __init__(self):
        import http.server
        self.requests = []
        self.seen = {}
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                api.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                     "date": self.headers.get("X-Amz-Date"), "body": body})
                conn = urllib.request.unquote(self.path.rsplit("/", 1)[1])
                api.seen[conn] = api.seen.get(conn, 0) + 1
                status = 200
                if conn.startswith("gone"):
                    status = 410
                elif conn.startswith("flaky") and api.seen[conn] == 1:
                    status = 500
                payload = b'{"message":"Gone"}' if status == 410 else b""
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline and len(self.requests) < n:
            time.sleep(0.05)
        return self.requests

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("stage", ["", "dev"])
def test_apigateway_mode_posts_signed_to_every_connection_and_410_prunes(kafka, engines, stage):
    api = FakeManagementApi()
    try:
        topic = unique("ws-apigw")
        create_topic(kafka, topic, 1)
        prefix = f"t{uuid.uuid4().hex[:8]}:"
        cust = unique("c")
        conns = ["live=A1", "gone=B2", "flaky/C3"]
        for cid in conns:
            redis("SADD", f"{prefix}customer:{cust}", cid)
            redis("SET", f"{prefix}connection:{cid}", cust, "EX", 86400)
        p = {"name": "ws-apigw", "topics": [topic], "errors": {"tolerance": "all"},
             "retry": {"initial_ms": 50, "max_ms": 200},
             "sinks": [{"plugin": "websocket", "mode": "apigateway",
                        "endpoint": f"http://127.0.0.1:{api.port}", "stage": stage,
                        "region": "eu-west-1", "key_prefix": prefix,
                        "message": {"type": "KYC_VERIFIED", "data": "${/data}"}}]}
        eng = ws_engine(engines, kafka, {"a": p})
        produce(kafka, topic, [event(cust, 1), event(unique("nobody"), 2)])
        # live, gone, flaky (500), then the retry: live, flaky (gone is pruned).
        reqs = api.wait(5)
        base = f"/{stage}/@connections/" if stage else "/@connections/"
        paths = sorted({r["path"] for r in reqs})
        assert paths == sorted(base + urllib.request.quote(c, safe="") for c in conns), paths
        for r in reqs:
            m = FakeManagementApi.SIG.match(r["auth"] or "")
            assert m, r["auth"]
            assert m["region"] == "eu-west-1"
            assert "host" in m["signed"].split(";") and "x-amz-date" in m["signed"].split(";")
            assert json.loads(r["body"]) == {"type": "KYC_VERIFIED", "data": {"n": 1}}
        deadline = time.time() + 30
        while time.time() < deadline and metric(eng, "sink_websocket_pushes_total") < 2:
            time.sleep(0.1)
        assert metric(eng, "sink_websocket_pushes_total") == 2, eng.logs()[-2000:]
        assert api.seen["flaky/C3"] == 2 and api.seen["gone=B2"] == 1
        assert set(redis("SMEMBERS", f"{prefix}customer:{cust}").split("\n")) == \
            {"live=A1", "flaky/C3"}
        assert redis("EXISTS", f"{prefix}connection:gone=B2") == "0"
        assert redis("EXISTS", f"{prefix}connection:live=A1") == "1"
        assert metric(eng, "sink_websocket_stale_connections_total") == 1
        assert eng.stop() == 0
    finally:
        api.close()


# ------------------------------------------------------ the browser client

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_served_browser_client_reconnects_and_resumes_without_loss_or_duplicates(
        kafka, engines, tmp_path):
    """connectd-ws.js as served, run under node with `ws`: the engine stops
    (1001) while events keep coming; when it is back the client reconnects
    with ?since= and ends up with every seq exactly once, no gap."""
    topic = unique("ws-js")
    create_topic(kafka, topic, 1)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    port = free_port()
    eng = ws_engine(engines, kafka, {"a": ws_pipeline("ws-js", topic, "T", key_prefix=prefix,
                                                      listen=f"127.0.0.1:{port}")})
    ws_port(eng)
    cust = unique("c")
    token_file = tmp_path / "token"
    token_file.write_text(jwt(cust))
    proc = subprocess.Popen(["node", str(Path(__file__).resolve().parent /
                                         "ws_browser_client.js"),
                             f"http://127.0.0.1:{port}", str(token_file)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    events = []
    threading.Thread(target=lambda: [events.append(json.loads(l)) for l in proc.stdout],
                     daemon=True).start()

    def wait(pred, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pred():
                return
            time.sleep(0.05)
        raise AssertionError(str(events[-6:])[:2000])

    seqs = lambda: [e["data"]["seq"] for e in events if e["event"] == "message"]
    try:
        wait(lambda: any(e["event"] == "hello" for e in events))
        produce(kafka, topic, [event(cust, i) for i in range(5)])
        wait(lambda: len(seqs()) == 5)
        assert eng.stop() == 0
        wait(lambda: any(e["event"] == "close" and e["data"]["code"] == 1001 for e in events))
        produce(kafka, topic, [event(cust, i) for i in range(5, 10)])
        token_file.write_text(jwt(cust))  # a fresh token for the next connect
        eng.start()
        wait(lambda: len(seqs()) >= 10)
        produce(kafka, topic, [event(cust, i) for i in range(10, 12)])
        wait(lambda: len(seqs()) >= 12)
        time.sleep(0.5)
        assert seqs() == list(range(1, 13)), seqs()
        ns = [e["data"]["data"]["n"] for e in events if e["event"] == "message"]
        assert ns == list(range(12))
        last = [e for e in events if e["event"] == "message"][-1]
        assert last["lastSeq"] == 12 and last["gaps"] == 0
        hellos = [e["data"] for e in events if e["event"] == "hello"]
        assert len(hellos) >= 2 and hellos[-1]["resumeFrom"] >= 5
        assert not any(e["event"] == "gap" for e in events)
    finally:
        if proc.poll() is None:
            proc.stdin.write("stop\n")
            proc.stdin.flush()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert eng.stop() == 0


def test_the_client_in_chromium_imports_across_origins_and_counts_gaps(kafka, engines):
    """connectd-ws.js in headless Chromium, imported as a module by a page of
    another origin: DOM CustomEvents, on(type), and the gap counter when the
    replay window no longer holds the oldest messages."""
    import browser
    reason = browser.missing()
    assert reason is None, reason
    topic = unique("ws-chromium")
    create_topic(kafka, topic, 1)
    eng = ws_engine(engines, kafka, {"a": ws_pipeline("ws-chromium", topic, "KYC_VERIFIED",
                                                      replay_size=3)})
    port = ws_port(eng)
    cust = unique("c")
    watcher = WsClient(f"ws://127.0.0.1:{port}/ws?token={jwt(cust)}")
    try:
        watcher.hello()
        produce(kafka, topic, [event(cust, i) for i in range(5)])
        assert len(watcher.wait_pushes(5)) == 5
    finally:
        watcher.stop()
    page = f"""<!doctype html><meta charset="utf-8"><title>ws</title>
<script type="module">
import {{ ConnectdWS }} from "http://127.0.0.1:{port}/connectd-ws.js";
window.got = []; window.typed = []; window.gapEvents = []; window.hello = null;
const ws = new ConnectdWS({{url: "ws://127.0.0.1:{port}/ws", since: 0,
                            token: async () => {json.dumps(jwt(cust))}}});
ws.addEventListener("hello", (e) => window.hello = e.detail);
ws.addEventListener("message", (e) => window.got.push(e.detail.seq));
ws.addEventListener("gap", (e) => window.gapEvents.push(e.detail));
ws.on("KYC_VERIFIED", (m) => window.typed.push(m.data.n));
window.client = ws;
window.sameGlobal = window.ConnectdWS === ConnectdWS;
ws.start();
</script>"""
    with browser.serve_pages({"/": page}) as base:
        res = browser.run_page(base + "/", [
            {"wait_for_function": "() => window.got && window.got.length >= 3"},
            {"eval": "() => ({got: window.got, typed: window.typed, gaps: window.client.gaps,"
                     " gapEvents: window.gapEvents, hello: window.hello,"
                     " sameGlobal: window.sameGlobal})", "as": "state"},
        ])
    st = res["results"]["state"]
    assert st["got"] == [3, 4, 5], st
    assert st["typed"] == [2, 3, 4], st
    assert st["gaps"] == 2 and st["gapEvents"] == [{"from": 1, "to": 2, "gaps": 2}], st
    assert st["hello"]["resumeFrom"] == 0 and st["hello"]["lastSeq"] == 5
    assert st["sameGlobal"] is True
    assert eng.stop() == 0


def test_a_client_that_pings_without_reading_is_closed_1008(kafka, engines):
    """Pings are answered with pongs; a client that sends them and never
    reads makes the engine hold the answers. They are bounded like messages
    (max_send_queue_bytes): the client is closed with 1008, and its memory
    goes with it (it used to grow without limit, ~350 bytes per 6-byte ping)."""
    eng, topic, port = raw_engine(engines, kafka, "ws-pingflood", max_send_queue_bytes=65536)
    cust = unique("c")
    ws = RawWs(port, jwt(cust))
    assert ws.message()["type"] == "connectd.hello"
    rss = lambda: int(re.search(r"VmRSS:\s+(\d+) kB",
                                Path(f"/proc/{eng.proc.pid}/status").read_text()).group(1))
    before = rss()
    burst = frame(OP_PING) * 100_000  # 600 kB of empty pings
    deadline = time.time() + 60
    try:
        while time.time() < deadline and \
                metric(eng, "sink_websocket_slow_client_closes_total") < 1:
            ws.sock.sendall(burst)
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed while we were still sending: what the test is for
    wait_metric(eng, "sink_websocket_slow_client_closes_total", 1, timeout=30)
    assert rss() - before < 64 * 1024, f"RSS grew by {rss() - before} kB"
    ws.close()
    # The engine goes on serving others.
    other = RawWs(port, jwt(unique("c")))
    assert other.message()["type"] == "connectd.hello"
    other.close()
    assert eng.stop() == 0
