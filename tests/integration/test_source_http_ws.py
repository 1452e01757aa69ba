"""source-http's API Gateway WebSocket integration routes (ws_routes):
POST /v1/ws/connect and /v1/ws/disconnect record and remove connections in
the Redis registry sink-websocket reads, over real HTTP against the local
redis-server (REDIS_URL), checked with redis-cli."""
import hashlib
import os
import json
import socket
import shutil
import struct
import subprocess
import time
import urllib.request
import uuid

import pytest

from conftest import unique
from test_source_http import Client, make_jwt, source_addr, source_engine

REDIS_URL = os.environ.get("REDIS_URL")
pytestmark = pytest.mark.skipif(not REDIS_URL, reason="REDIS_URL not set (scripts/redis-start)")
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
HS = {"alg": "HS256", "typ": "JWT"}


def raw(*args, url=None):
    return subprocess.run([REDIS_CLI, "-u", url or REDIS_URL, "--raw", *args], check=True,
                          capture_output=True, text=True, timeout=30).stdout.strip()


def members(key):
    out = raw("SMEMBERS", key)
    return set(out.split("\n")) if out else set()


def ws_engine(engines, kafka, tmp_path, redis_url=None, **options):
    topic = unique("src-ws")
    opts = {"ws_routes": True, "ws_key_prefix": f"t{uuid.uuid4().hex[:8]}:"}
    opts.update(options)
    eng = source_engine(engines, kafka, tmp_path, {topic: "kyc-verified"},
                        engine_extra={"redis_url": redis_url or REDIS_URL}, **opts).start()
    return eng, Client(source_addr(eng)), opts["ws_key_prefix"]


def ws(client, route, body, headers=None, wait_redis=True):
    """POSTs to /v1/ws/{route}; while the engine's Redis client is still
    connecting (it connects on first use), a 503 is retried for a while."""
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    deadline = time.time() + (15 if wait_redis else 0)
    while True:
        status, resp, parsed = client.request("POST", f"/v1/ws/{route}", body, h)
        if status != 503 or time.time() >= deadline:
            return status, resp, parsed
        time.sleep(0.2)


def test_connect_records_both_keys_with_a_24h_ttl_and_disconnect_removes(kafka, engines,
                                                                         tmp_path):
    eng, c, p = ws_engine(engines, kafka, tmp_path)
    cust, conn1, conn2 = unique("cust"), "Ab1=" + uuid.uuid4().hex[:8], "Cd2=" + uuid.uuid4().hex[:8]

    status, _, body = ws(c, "connect", {"connectionId": conn1, "customerId": cust})
    assert status == 200, body
    assert body == {"connectionId": conn1, "customerId": cust}
    assert members(f"{p}customer:{cust}") == {conn1}
    assert raw("GET", f"{p}connection:{conn1}") == cust
    for key in (f"{p}customer:{cust}", f"{p}connection:{conn1}"):
        assert 86300 <= int(raw("TTL", key)) <= 86400, key

    # A second connection of the same customer (another tab).
    status, _, body = ws(c, "connect", {"connectionId": conn2, "customerId": cust})
    assert status == 200, body
    assert members(f"{p}customer:{cust}") == {conn1, conn2}
    assert raw("GET", f"{p}connection:{conn2}") == cust

    # The customerId may be left out of a disconnect: the registry knows it.
    status, _, body = ws(c, "disconnect", {"connectionId": conn1})
    assert status == 200, body
    assert body == {"connectionId": conn1, "customerId": cust}
    assert members(f"{p}customer:{cust}") == {conn2}
    assert raw("EXISTS", f"{p}connection:{conn1}") == "0"

    status, _, body = ws(c, "disconnect", {"connectionId": conn2, "customerId": cust})
    assert status == 200, body
    assert raw("EXISTS", f"{p}customer:{cust}") == "0"  # an empty set is no key
    assert raw("EXISTS", f"{p}connection:{conn2}") == "0"

    # Unknown (or already removed) connection: 404 with a JSON error.
    status, resp, body = ws(c, "disconnect", {"connectionId": conn2, "customerId": cust})
    assert status == 404 and "unknown connection" in body["error"], body
    assert resp.getheader("Content-Type") == "application/json"
    c.close()
    assert eng.stop() == 0  # a clean exit (the sanitizer build reports leaks here)


def test_bad_bodies_are_400_naming_the_field(kafka, engines, tmp_path):
    eng, c, p = ws_engine(engines, kafka, tmp_path)
    cases = [
        ("connect", b"{not json", None),
        ("connect", [1, 2], ""),
        ("connect", {"customerId": "c1"}, "/connectionId"),
        ("connect", {"connectionId": "x1"}, "/customerId"),
        ("connect", {"connectionId": 7, "customerId": "c1"}, "/connectionId"),
        ("connect", {"connectionId": "x1", "customerId": ""}, "/customerId"),
        ("disconnect", {"customerId": "c1"}, "/connectionId"),
    ]
    for route, body, field in cases:
        status, _, parsed = ws(c, route, body, wait_redis=False)
        assert status == 400, (route, body, parsed)
        assert parsed["field"] == field, (route, body, parsed)
    status, resp, _ = c.request("GET", "/v1/ws/connect")
    assert status == 405 and resp.getheader("Allow") == "POST"
    status, _, _ = ws(c, "connect", {"connectionId": "x1", "customerId": "c1"},
                      headers={"Content-Type": "text/plain"}, wait_redis=False)
    assert status == 415
    c.close()


def test_routes_are_off_by_default(kafka, engines, tmp_path):
    topic = unique("src-ws-off")
    eng = source_engine(engines, kafka, tmp_path, {topic: "kyc-verified"},
                        engine_extra={"redis_url": REDIS_URL}).start()
    c = Client(source_addr(eng))
    status, _, _ = c.request("POST", "/v1/ws/connect",
                             b'{"connectionId":"a","customerId":"b"}',
                             {"Content-Type": "application/json"})
    assert status == 404
    c.close()


def test_jwt_sub_must_be_the_customer_and_auth_is_required(kafka, engines, tmp_path):
    secret = b"ws-secret-" + uuid.uuid4().hex.encode()
    key = "k-" + uuid.uuid4().hex
    eng, c, p = ws_engine(engines, kafka, tmp_path, jwt_secret=secret.decode(),
                          api_keys=["sha256:" + hashlib.sha256(key.encode()).hexdigest()])
    now = int(time.time())
    alice, bob = unique("alice"), unique("bob")
    conn = "c-" + uuid.uuid4().hex[:10]

    def bearer(sub):
        claims = {"exp": now + 300}
        if sub is not None:
            claims["sub"] = sub
        return {"Authorization": "Bearer " + make_jwt(HS, claims, secret)}

    # No credential: 401, nothing recorded.
    status, resp, body = ws(c, "connect", {"connectionId": conn, "customerId": alice},
                            wait_redis=False)
    assert status == 401 and resp.getheader("WWW-Authenticate"), body
    status, _, _ = ws(c, "connect", {"connectionId": conn, "customerId": alice},
                      headers={"Authorization": "Bearer nonsense"}, wait_redis=False)
    assert status == 401
    # A JWT for bob cannot register a connection for alice; none without sub.
    status, _, body = ws(c, "connect", {"connectionId": conn, "customerId": alice},
                         headers=bearer(bob), wait_redis=False)
    assert status == 403 and body["field"] == "/customerId", body
    status, _, body = ws(c, "connect", {"connectionId": conn, "customerId": alice},
                         headers=bearer(None), wait_redis=False)
    assert status == 403, body
    assert raw("EXISTS", f"{p}connection:{conn}") == "0"

    # Alice's own JWT: recorded.
    status, _, body = ws(c, "connect", {"connectionId": conn, "customerId": alice},
                         headers=bearer(alice))
    assert status == 200, body
    assert members(f"{p}customer:{alice}") == {conn}

    # Bob cannot remove alice's connection, whether he names her or not.
    status, _, body = ws(c, "disconnect", {"connectionId": conn}, headers=bearer(bob))
    assert status == 403, body
    status, _, body = ws(c, "disconnect", {"connectionId": conn, "customerId": alice},
                         headers=bearer(bob))
    assert status == 403, body
    assert members(f"{p}customer:{alice}") == {conn}

    # API Gateway's integration (an API key) may remove it.
    status, _, body = ws(c, "disconnect", {"connectionId": conn, "customerId": alice},
                         headers={"X-Api-Key": key})
    assert status == 200, body
    assert raw("EXISTS", f"{p}connection:{conn}") == "0"
    c.close()
    assert eng.stop() == 0


def test_redis_down_is_503_with_retry_after(kafka, engines, tmp_path):
    eng, c, p = ws_engine(engines, kafka, tmp_path, redis_url="redis://127.0.0.1:1")
    for route in ("connect", "disconnect"):
        status, resp, body = ws(c, route, {"connectionId": "x1", "customerId": "c1"},
                                wait_redis=False)
        assert status == 503, (route, body)
        assert resp.getheader("Retry-After") == "1"
        assert "Redis" in body["error"], body
    # The engine keeps serving: events still go to Kafka.
    status, _, _ = c.request("GET", "/healthz")
    assert status == 200
    c.close()
    assert eng.stop() == 0


def test_ws_routes_without_redis_url_fail_at_start(kafka, engines, tmp_path):
    topic = unique("src-ws-nourl")
    eng = source_engine(engines, kafka, tmp_path, {topic: "kyc-verified"},
                        ws_routes=True).start()
    deadline = time.time() + 30
    while time.time() < deadline and "redis_url" not in eng.logs():
        time.sleep(0.1)
    assert "ws_routes: needs the engine's Redis client" in eng.logs(), eng.logs()[-3000:]
    assert "listening on" not in eng.logs()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(port, tmp_path):
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.Popen([server, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            if raw("PING", url=f"redis://127.0.0.1:{port}") == "PONG":
                return proc
        except subprocess.CalledProcessError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("private redis-server did not answer PING")


def test_redis_stopped_mid_run_is_503_then_recovers(kafka, engines, tmp_path):
    """A redis-server of the test's own: up, stopped (503 + Retry-After, no
    hang), back on the same port (the engine reconnects; 200 again)."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}"
    proc = start_redis(port, tmp_path)
    try:
        eng, c, p = ws_engine(engines, kafka, tmp_path, redis_url=url)
        cust = unique("cust")
        status, _, body = ws(c, "connect", {"connectionId": "up-1", "customerId": cust})
        assert status == 200, body
        proc.terminate()
        proc.wait(timeout=15)
        status, resp, body = ws(c, "connect", {"connectionId": "down-1", "customerId": cust},
                                wait_redis=False)
        assert status == 503 and resp.getheader("Retry-After") == "1", body
        proc = start_redis(port, tmp_path)
        status, _, body = ws(c, "connect", {"connectionId": "back-1", "customerId": cust})
        assert status == 200, body
        assert raw("SMEMBERS", f"{p}customer:{cust}", url=url) == "back-1"
        c.close()
        assert eng.stop() == 0
    finally:
        proc.kill()
        proc.wait()


def test_redis_that_stops_answering_is_503_within_the_command_timeout(kafka, engines, tmp_path):
    """A redis-server that keeps the connection but answers nothing (CLIENT
    PAUSE) used to leave /v1/ws/connect unanswered for as long as it lasted.
    The engine's Redis client drops a server that answers nothing for 5 s:
    the request gets its 503, and once Redis answers again so do the routes.
    A reload that removes the pipeline while an orphaned request still waits
    on Redis retires it only once the command is settled (it used to free
    what the late reply then touched)."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}"
    proc = start_redis(port, tmp_path)
    try:
        eng, c, p = ws_engine(engines, kafka, tmp_path, redis_url=url)
        cust = unique("cust")
        status, _, body = ws(c, "connect", {"connectionId": "up-1", "customerId": cust})
        assert status == 200, body
        raw("CLIENT", "PAUSE", "9000", "ALL", url=url)
        t0 = time.time()
        status, resp, body = ws(c, "connect", {"connectionId": "stuck-1", "customerId": cust},
                                wait_redis=False)
        took = time.time() - t0
        assert status == 503 and resp.getheader("Retry-After") == "1", body
        assert "no answer within 5000 ms" in body["error"], body
        assert 4.5 < took < 8, took
        assert "lost: no answer within 5000 ms" in eng.logs()
        status, _, body = ws(c, "connect", {"connectionId": "back-1", "customerId": cust})
        assert status == 200, body
        # A request whose client reset its connection while Redis is paused,
        # then a reload that removes the pipeline: the retiring source waits
        # for the command (bounded by the watchdog) instead of freeing what
        # the late reply would touch, and the engine goes on.
        raw("CLIENT", "PAUSE", "8000", "ALL", url=url)
        body = json.dumps({"connectionId": "rst-1", "customerId": cust}).encode()
        addr = source_addr(eng)
        s = socket.create_connection(addr, timeout=10)
        s.sendall(b"POST /v1/ws/connect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                  b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        time.sleep(0.5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # RST: the request is orphaned
        (eng.dir / "ingest.json").unlink()
        req = urllib.request.Request(eng.admin_url() + "/reload", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=30) as r:
            rep = json.load(r)
        assert rep["stopped"] == ["ingest"], rep
        eng.wait_log("[ingest] stopped", timeout=20)
        time.sleep(8.5 - 0.5 - 1)  # past the pause: a late reply arrives now
        assert eng.proc.poll() is None, eng.logs()[-3000:]
        with urllib.request.urlopen(eng.admin_url() + "/healthz", timeout=10) as r:
            assert r.status == 200
        assert eng.stop() == 0
        c.close()
    finally:
        proc.kill()
        proc.wait()
