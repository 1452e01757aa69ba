"""source-http over real HTTP: every answer it gives, checked against what
kcat (a client we did not write) finds in Kafka.  A 202 must mean stored,
at the partition and offset it names; anything else must mean not stored
(or, for a 503 after the ack timeout, "maybe: retry with the same
eventId")."""
import base64
import hashlib
import hmac
import http.client
import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid

import pytest

from conftest import CONNECTD, ROOT, consume_all, create_topic, kcat, unique

SCHEMAS = ROOT / "pipelines" / "schemas"
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


# ----------------------------------------------------------------- helpers

def source_engine(engines, kafka, tmp_path, topics, kafka_props=None, engine_extra=None,
                  **options):
    """An engine running one source pipeline, "ingest", on a free port.
    topics maps each (unique) topic to the onboarding schema it uses."""
    schemas = tmp_path / f"schemas-{uuid.uuid4().hex[:6]}"
    schemas.mkdir()
    for topic, kind in topics.items():
        shutil.copy(SCHEMAS / f"{kind}.json", schemas / f"{topic}.json")
    source = {"plugin": "http", "listen": "127.0.0.1:0", "topics": list(topics),
              "schemas_dir": str(schemas)}
    source.update(options)
    props = {"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]}
    props.update(kafka_props or {})
    return engines(props, {"ingest": {"name": "ingest", "source": source}},
                   engine_extra=engine_extra)


def source_addr(eng, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = re.findall(r"listening on (127\.0\.0\.1):(\d+)", eng.logs())
        if m:
            return m[-1][0], int(m[-1][1])
        if eng.proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError("source address not logged:\n" + eng.logs()[-3000:])


class Client:
    """One keep-alive connection to the source."""

    def __init__(self, addr, timeout=30):
        self.conn = http.client.HTTPConnection(addr[0], addr[1], timeout=timeout)

    def request(self, method, path, body=None, headers=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.conn.request(method, path, body=body, headers=headers or {})
        r = self.conn.getresponse()
        data = r.read()
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data
        return r.status, r, parsed

    def post(self, topic, body, ctype="application/json", headers=None):
        h = {"Content-Type": ctype} if ctype else {}
        h.update(headers or {})
        return self.request("POST", f"/v1/events/{topic}", body, h)

    def close(self):
        self.conn.close()


def raw_exchange(addr, data, timeout=10, read_until_close=True):
    """Sends raw bytes, returns what the server answers (until it closes)."""
    s = socket.create_connection(addr, timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
            if not read_until_close and b"\r\n\r\n" in out:
                break
        return out
    finally:
        s.close()


def kyc(cust, i, **extra):
    ev = {"customerId": cust, "applicationId": f"app-{cust}",
          "timestamp": f"2024-05-01T12:00:{i % 60:02d}.{i % 1000:03d}Z",
          "data": {"status": "VERIFIED" if i % 3 else "REJECTED",
                   "riskLevel": ["LOW", "MEDIUM", "HIGH"][i % 3], "seq": i}}
    ev.update(extra)
    return ev


def user_info(cust, i):
    return {"customerId": cust, "timestamp": "2024-05-01T12:00:00Z",
            "data": {"firstName": "Ada", "lastName": "Lovelace", "email": f"{cust}@example.com",
                     "seq": i}}


def records(kafka, topic, expect):
    """{(partition, offset): (key, value dict)} as kcat reads the topic."""
    out = consume_all(kafka, topic, fmt="%p\t%o\t%k\t%s\n", expect=expect)
    found = {}
    for line in out.splitlines():
        p, o, k, v = line.split("\t", 3)
        found[(int(p), int(o))] = (k, json.loads(v))
    return found


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(header, claims, secret=None, sign=None):
    head = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    if sign is not None:
        sig = sign(head.encode())
    elif secret is not None:
        sig = hmac.new(secret, head.encode(), hashlib.sha256).digest()
    else:
        sig = b""
    return head + "." + b64url(sig)


# ------------------------------------------------------------------- tests

def test_a_202_names_the_partition_and_offset_where_kcat_finds_the_event(kafka, engines,
                                                                         tmp_path):
    topic = unique("src-kyc")
    create_topic(kafka, topic, 3)
    eng = source_engine(engines, kafka, tmp_path, {topic: "kyc-verified"}).start()
    client = Client(source_addr(eng))
    customers = [f"cust-{k}" for k in range(5)]
    accepted = {}  # (partition, offset) -> (customer, posted event, eventId)
    order = {c: [] for c in customers}
    for i in range(60):
        cust = customers[i % len(customers)]
        ev = kyc(cust, i)
        if i % 4 == 0:
            ev["eventId"] = str(uuid.uuid4())  # the client's own id is kept
        status, resp, body = client.post(topic, ev)
        assert status == 202, body
        assert resp.getheader("Content-Type") == "application/json"
        assert set(body) == {"topic", "partition", "offset", "eventId"}
        assert body["topic"] == topic
        if "eventId" in ev:
            assert body["eventId"] == ev["eventId"]
        else:
            assert UUID4.match(body["eventId"]), body
        accepted[(body["partition"], body["offset"])] = (cust, ev, body["eventId"])
        order[cust].append((body["partition"], body["offset"]))
    # Rejected events never reach Kafka.
    bad = kyc("cust-0", 99)
    bad["data"]["riskLevel"] = "EXTREME"
    assert client.post(topic, bad)[0] == 400
    client.close()

    found = records(kafka, topic, expect=len(accepted))
    assert set(found) == set(accepted), "kcat reads exactly the accepted events"
    for pos, (cust, ev, event_id) in accepted.items():
        key, value = found[pos]
        assert key == cust
        assert value == dict(ev, eventId=event_id)
    # Each customer's events share one partition, in the order they were accepted.
    for cust, positions in order.items():
        assert len({p for p, _ in positions}) == 1, (cust, positions)
        offsets = [o for _, o in positions]
        assert offsets == sorted(offsets)
    # An assigned eventId is the value's first member; the rest is the client's bytes.
    pos, (cust, ev, event_id) = next((p, a) for p, a in accepted.items() if "eventId" not in a[1])
    raw = consume_all(kafka, topic, fmt="%p\t%o\t%s\n", expect=len(accepted))
    line = [l for l in raw.splitlines() if l.startswith(f"{pos[0]}\t{pos[1]}\t")][0]
    assert line.split("\t", 2)[2] == ('{"eventId":"%s",' % event_id) + json.dumps(ev)[1:]
    assert eng.stop() == 0


# The onboarding journey of scripts/demo, one event per topic.
JOURNEY = [
    ("user-info-submitted", "cust-1001", None,
     {"firstName": "Ada", "lastName": "Byron", "email": "ada@example.com"}),
    ("documents-processed", "cust-1001", "app-1",
     {"documentType": "passport", "confidence": 0.98, "status": "EXTRACTED"}),
    ("kyc-verified", "cust-1001", "app-1", {"status": "VERIFIED", "riskLevel": "LOW"}),
    ("policy-recommended", "cust-1001", "app-1",
     {"recommendations": [{"policyId": "term-life-20", "premium": 32.5}]}),
    ("workflow-completed", "cust-1001", "app-1", {"policyId": "term-life-20",
                                                  "status": "COMPLETED"}),
    ("workflow-errors", "cust-1002", "app-2",
     {"stage": "kyc", "error": "document unreadable", "retryable": False}),
]


def test_the_six_onboarding_events_pass_the_repository_schemas(kafka, engines, tmp_path):
    topics = {unique(kind): kind for kind, *_ in JOURNEY}
    for t in topics:
        create_topic(kafka, t, 3)
    eng = source_engine(engines, kafka, tmp_path, topics).start()
    client = Client(source_addr(eng))
    by_kind = {kind: t for t, kind in topics.items()}
    for kind, cust, app, data in JOURNEY:
        ev = {"customerId": cust, "timestamp": "2024-05-01T12:00:00.000Z", "data": data}
        if app:
            ev["applicationId"] = app
        status, _, body = client.post(by_kind[kind], ev)
        assert status == 202, (kind, body)
        if kind != "user-info-submitted":
            del ev["applicationId"]
            status, _, body = client.post(by_kind[kind], ev)
            assert status == 400 and body["field"] == "/applicationId", (kind, body)
    client.close()
    for t in topics:
        assert len(records(kafka, t, expect=1)) == 1
    assert eng.stop() == 0


def test_ndjson_batches_are_answered_line_by_line(kafka, engines, tmp_path):
    topic = unique("src-batch")
    create_topic(kafka, topic, 3)
    eng = source_engine(engines, kafka, tmp_path, {topic: "user-info-submitted"},
                        max_batch=5).start()
    client = Client(source_addr(eng))

    good = [user_info(f"b-{i % 2}", i) for i in range(4)]
    body = "\n".join(json.dumps(e) for e in good) + "\n"
    status, resp, results = client.post(topic, body, "application/x-ndjson")
    assert status == 202, results
    assert [r["line"] for r in results] == [1, 2, 3, 4]
    assert all(r["status"] == 202 and UUID4.match(r["eventId"]) for r in results)

    missing = user_info("b-0", 10)
    del missing["data"]["email"]
    lines = [json.dumps(user_info("b-0", 11)), "", '{"customerId": "b-1",', json.dumps(missing),
             json.dumps(user_info("b-1", 12)) + "\r"]
    status, resp, results = client.post(topic, "\n".join(lines), "application/x-ndjson")
    assert status == 207, results
    assert [(r["line"], r["status"]) for r in results] == [(1, 202), (3, 400), (4, 400), (5, 202)]
    assert results[1]["field"] is None and "invalid JSON" in results[1]["error"]
    assert results[2]["field"] == "/data/email"
    assert results[2]["error"] == "required field is missing"

    status, _, results = client.post(topic, "[]\n{}\n", "application/x-ndjson")
    assert status == 400 and [r["status"] for r in results] == [400, 400]
    status, _, body = client.post(topic, "\n \n", "application/x-ndjson")
    assert status == 400 and body["error"] == "the batch holds no events"
    six = "\n".join(json.dumps(user_info("b-0", i)) for i in range(6))
    status, _, body = client.post(topic, six, "application/x-ndjson")
    assert status == 413 and "max_batch" in body["error"]
    client.close()

    found = records(kafka, topic, expect=6)
    assert len(found) == 6, found  # 4 + 2; nothing from rejected lines or refused batches
    assert sorted(v["data"]["seq"] for _, v in found.values()) == [0, 1, 2, 3, 11, 12]
    assert eng.stop() == 0


def test_every_refusal_has_its_status_and_names_the_problem(kafka, engines, tmp_path):
    topic = unique("src-codes")
    create_topic(kafka, topic, 1)
    eng = source_engine(engines, kafka, tmp_path, {topic: "kyc-verified"}, max_body=4096).start()
    addr = source_addr(eng)
    client = Client(addr)

    def bad(mutate):
        ev = kyc("c-1", 1)
        mutate(ev)
        status, _, body = client.post(topic, ev)
        assert status == 400, body
        return body["field"], body["error"]

    assert bad(lambda e: e.pop("customerId")) == ("/customerId", "required field is missing")
    assert bad(lambda e: e.pop("applicationId")) == ("/applicationId", "required field is missing")
    assert bad(lambda e: e.update(customerId=42)) == ("/customerId", "expected string, got integer")
    assert bad(lambda e: e.update(data="x")) == ("/data", "expected object, got string")
    assert bad(lambda e: e["data"].update(riskLevel="EXTREME")) == \
        ("/data/riskLevel", 'must be one of ["LOW","MEDIUM","HIGH"]')
    assert bad(lambda e: e.update(eventId="not-a-uuid"))[0] == "/eventId"
    assert bad(lambda e: e.update(eventId=7)) == ("/eventId", "must be a string (a UUID)")
    assert bad(lambda e: e.update(timestamp="2024-02-30T00:00:00Z"))[0] == "/timestamp"
    assert bad(lambda e: e.update(timestamp="yesterday"))[0] == "/timestamp"
    assert bad(lambda e: e.update(customerID="typo")) == \
        ("/customerID", "unknown field (not in the topic's schema)")
    assert bad(lambda e: e.update(customerId="")) == \
        ("/customerId", "must be at least 1 character(s) long")

    status, _, body = client.post(topic, b'{"customerId": "c-1", ')
    assert status == 400 and body["field"] is None and body["error"].startswith("invalid JSON")
    status, _, body = client.post(topic, b'{"a": 1, "a": 2}')
    assert status == 400 and "duplicate" in body["error"]
    status, _, body = client.post(topic, b'["not", "an", "object"]')
    assert status == 400 and body == {"error": "an event must be a JSON object", "field": ""}
    status, _, body = client.post(topic, b"\xff\xfe{}")
    assert status == 400

    status, _, body = client.post(unique("nope"), kyc("c-1", 1))
    assert status == 404 and "unknown topic" in body["error"]
    # A topic name that is not UTF-8 once decoded: the reason is still there.
    status, _, body = client.post("%FFx", kyc("c-1", 1))
    assert status == 404 and body["error"] == 'unknown topic "\ufffdx"', body
    assert client.request("GET", "/v1/nothing")[0] == 404
    assert client.request("POST", "/v1/events/")[0] == 404
    status, resp, _ = client.request("GET", f"/v1/events/{topic}")
    assert status == 405 and resp.getheader("Allow") == "POST"
    status, resp, _ = client.request("DELETE", f"/v1/events/{topic}")
    assert status == 405 and resp.getheader("Allow") == "POST"
    status, resp, _ = client.request("POST", "/healthz", b"")
    assert status == 405 and resp.getheader("Allow") == "GET, HEAD"
    for ctype in ("text/plain", "application/json; charset=latin-1", None):
        assert client.post(topic, kyc("c-1", 1), ctype)[0] == 415, ctype
    assert client.post(topic, kyc("c-1", 1), "application/json; charset=UTF-8")[0] == 202

    status, _, body = client.request("GET", "/healthz")
    assert status == 200 and body == {"status": "ok"}
    client.close()

    # 413 and 411 come from the engine's HTTP server and its limits.
    big = json.dumps(kyc("c-1", 1, note="x" * 5000)).encode()
    out = raw_exchange(addr, b"POST /v1/events/%s HTTP/1.1\r\nHost: t\r\nContent-Type: "
                       b"application/json\r\nContent-Length: %d\r\n\r\n" % (topic.encode(), len(big))
                       + big)
    assert out.startswith(b"HTTP/1.1 413 "), out[:200]
    out = raw_exchange(addr, b"POST /v1/events/%s HTTP/1.1\r\nHost: t\r\nContent-Type: "
                       b"application/json\r\n\r\n" % topic.encode())
    assert out.startswith(b"HTTP/1.1 411 "), out[:200]
    # A chunked body is fine: the server decodes it.
    ev = json.dumps(kyc("c-1", 2)).encode()
    out = raw_exchange(addr, b"POST /v1/events/%s HTTP/1.1\r\nHost: t\r\nContent-Type: "
                       b"application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
                       b"\r\n%x\r\n%s\r\n0\r\n\r\n" % (topic.encode(), len(ev), ev))
    assert out.startswith(b"HTTP/1.1 202 "), out[:300]
    # Garbage is answered 400 and closed, and the engine lives on.
    out = raw_exchange(addr, b"HELLO\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 "), out[:200]
    out = raw_exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20000
                       + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 431 "), out[:200]

    found = records(kafka, topic, expect=2)
    assert len(found) == 2, "only the two accepted events"
    assert eng.stop() == 0


def test_a_stalled_sender_gets_408_and_does_not_hold_up_others(kafka, engines, tmp_path):
    topic = unique("src-slow")
    create_topic(kafka, topic, 1)
    eng = source_engine(engines, kafka, tmp_path, {topic: "kyc-verified"},
                        body_timeout_ms=2000).start()
    addr = source_addr(eng)
    slow = socket.create_connection(addr, timeout=10)
    slow.sendall(b"POST /v1/events/%s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 500\r\n\r\n{\"customerId\":" % topic.encode())
    t0 = time.time()
    client = Client(addr)
    for i in range(5):
        status, _, body = client.post(topic, kyc("c-1", i))
        assert status == 202, body
    slow.setblocking(False)
    with pytest.raises(BlockingIOError):
        slow.recv(4096)  # others were answered while the slow body is still pending
    slow.setblocking(True)
    out = b""
    while b"\r\n\r\n" not in out:
        chunk = slow.recv(4096)
        if not chunk:
            break
        out += chunk
    assert out.startswith(b"HTTP/1.1 408 "), out
    assert 1.8 < time.time() - t0 < 6
    slow.close()
    client.close()
    assert eng.stop() == 0


def test_pause_answers_503_with_retry_after_and_resume_accepts_again(kafka, engines, tmp_path):
    topic = unique("src-pause")
    create_topic(kafka, topic, 1)
    eng = source_engine(engines, kafka, tmp_path, {topic: "kyc-verified"},
                        retry_after_s=7).start()
    client = Client(source_addr(eng))
    admin = eng.admin_url()
    assert client.post(topic, kyc("c-1", 0))[0] == 202

    req = urllib.request.Request(admin + "/pipelines/ingest/pause", method="POST", data=b"")
    assert json.loads(urllib.request.urlopen(req, timeout=10).read())["state"] == "PAUSED"
    status, resp, body = client.post(topic, kyc("c-1", 1))
    assert status == 503 and resp.getheader("Retry-After") == "7", body
    assert client.request("GET", "/healthz")[0] == 503

    req = urllib.request.Request(admin + "/pipelines/ingest/resume", method="POST", data=b"")
    assert json.loads(urllib.request.urlopen(req, timeout=10).read())["state"] == "RUNNING"
    assert client.post(topic, kyc("c-1", 2))[0] == 202
    assert client.request("GET", "/healthz")[0] == 200
    client.close()
    found = records(kafka, topic, expect=2)
    assert sorted(v["data"]["seq"] for _, v in found.values()) == [0, 2]
    assert eng.stop() == 0
    assert "paused: new events are answered 503" in eng.logs()


def test_api_keys_are_checked_against_their_hashes(kafka, engines, tmp_path):
    topic = unique("src-key")
    create_topic(kafka, topic, 1)
    key = "k-" + uuid.uuid4().hex
    other = "k-" + uuid.uuid4().hex
    hashes = ["sha256:" + hashlib.sha256(k.encode()).hexdigest() for k in (other, key)]
    eng = source_engine(engines, kafka, tmp_path, {topic: "kyc-verified"}, api_keys=hashes).start()
    client = Client(source_addr(eng))

    status, resp, body = client.post(topic, kyc("c-1", 0))
    assert status == 401 and body == {"error": "authentication required"}
    assert resp.getheader("WWW-Authenticate").startswith("Bearer realm=")
    for headers in ({"X-Api-Key": key + "x"}, {"X-Api-Key": key[:-1]},
                    {"Authorization": "Bearer " + hashes[1]}, {"Authorization": "Basic " + key},
                    {"X-Api-Key": ""}):
        status, resp, body = client.post(topic, kyc("c-1", 0), headers=headers)
        assert status == 401, headers
        assert resp.getheader("WWW-Authenticate")
    assert client.post(topic, kyc("c-1", 1), headers={"X-Api-Key": key})[0] == 202
    assert client.post(topic, kyc("c-1", 2), headers={"x-api-key": other})[0] == 202
    assert client.post(topic, kyc("c-1", 3), headers={"Authorization": "Bearer " + key})[0] == 202
    # Health checks need no key.
    assert client.request("GET", "/healthz")[0] == 200
    client.close()
    found = records(kafka, topic, expect=3)
    assert sorted(v["data"]["seq"] for _, v in found.values()) == [1, 2, 3]
    assert eng.stop() == 0
    assert key not in eng.logs()


def test_jwts_must_be_signed_current_and_never_alg_none(kafka, engines, tmp_path):
    topic = unique("src-jwt")
    create_topic(kafka, topic, 1)
    secret = uuid.uuid4().hex.encode()
    eng = source_engine(engines, kafka, tmp_path, {topic: "kyc-verified"},
                        jwt_secret=secret.decode()).start()
    client = Client(source_addr(eng))
    now = int(time.time())
    hs = {"alg": "HS256", "typ": "JWT"}

    def post(token, seq):
        return client.post(topic, kyc("c-1", seq), headers={"Authorization": "Bearer " + token})

    assert post(make_jwt(hs, {"sub": "svc", "exp": now + 300}, secret), 1)[0] == 202
    assert post(make_jwt(hs, {"sub": "svc"}, secret), 2)[0] == 202  # no exp: no expiry
    refused = {
        "expired": make_jwt(hs, {"sub": "svc", "exp": now - 10}, secret),
        "not yet valid": make_jwt(hs, {"sub": "svc", "nbf": now + 300}, secret),
        "other secret": make_jwt(hs, {"sub": "svc", "exp": now + 300}, b"not-the-secret"),
        "alg none": make_jwt({"alg": "none", "typ": "JWT"}, {"sub": "svc", "exp": now + 300}),
        "alg None": make_jwt({"alg": "None"}, {"sub": "svc", "exp": now + 300}),
        "alg RS256 without a key": make_jwt({"alg": "RS256"}, {"sub": "svc"}, secret),
        "tampered": make_jwt(hs, {"sub": "svc", "exp": now + 300}, secret)[:-3] + "AAA",
        "garbage": "a.b.c",
        "not a jwt": "abc",
    }
    for name, token in refused.items():
        status, resp, body = post(token, 0)
        assert status == 401, name
        assert body == {"error": "invalid credentials"}, name
        assert 'error="invalid_token"' in resp.getheader("WWW-Authenticate"), name
    client.close()
    found = records(kafka, topic, expect=2)
    assert sorted(v["data"]["seq"] for _, v in found.values()) == [1, 2]
    assert eng.stop() == 0


def test_rs256_jwts_verify_with_the_public_key_and_the_key_is_no_hmac_secret(kafka, engines,
                                                                            tmp_path):
    topic = unique("src-rs")
    create_topic(kafka, topic, 1)
    priv, pub = tmp_path / "jwt.key", tmp_path / "jwt.pub"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", str(priv)], check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", str(priv), "-pubout", "-out", str(pub)], check=True,
                   capture_output=True)
    pem = pub.read_text()
    eng = source_engine(engines, kafka, tmp_path, {topic: "kyc-verified"},
                        jwt_public_key=pem).start()
    client = Client(source_addr(eng))

    def rs_sign(data):
        return subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(priv)], input=data,
                              check=True, capture_output=True).stdout

    claims = {"sub": "svc", "exp": int(time.time()) + 300}
    good = make_jwt({"alg": "RS256", "typ": "JWT"}, claims, sign=rs_sign)
    forged = make_jwt({"alg": "HS256", "typ": "JWT"}, claims, pem.encode())
    hdr = {"Authorization": "Bearer " + good}
    assert client.post(topic, kyc("c-1", 1), headers=hdr)[0] == 202
    assert client.post(topic, kyc("c-1", 2),
                       headers={"Authorization": "Bearer " + forged})[0] == 401
    client.close()
    assert eng.stop() == 0


def test_kafka_unreachable_is_503_with_retry_after_at_the_ack_timeout(kafka, engines, tmp_path):
    topic = unique("src-down")
    eng = source_engine(engines, {"KAFKA_BOOTSTRAP": "127.0.0.1:1"}, tmp_path,
                        {topic: "kyc-verified"}, ack_timeout_ms=700, retry_after_s=2,
                        engine_extra={"shutdown_grace_ms": 2000}).start()
    client = Client(source_addr(eng))
    t0 = time.time()
    status, resp, body = client.post(topic, kyc("c-1", 1, eventId=str(uuid.uuid4())))
    took = time.time() - t0
    assert status == 503, body
    assert resp.getheader("Retry-After") == "2"
    assert 0.6 < took < 3, took
    assert "retry with the same eventId" in body["error"] and UUID4.match(body["eventId"])
    # A batch: every line 503, and the status says retry.
    lines = "\n".join(json.dumps(kyc("c-1", i)) for i in range(3))
    status, resp, results = client.post(topic, lines, "application/x-ndjson")
    assert status == 503 and resp.getheader("Retry-After") == "2"
    assert [r["status"] for r in results] == [503, 503, 503]
    assert all(UUID4.match(r["eventId"]) for r in results)
    client.close()
    # The late delivery reports (purged at shutdown) find nothing freed.
    assert eng.stop() == 0


def test_a_topic_missing_from_kafka_is_503_not_400(kafka, engines, tmp_path):
    """A configured topic that does not exist in Kafka (auto-creation is off
    on MSK) is the deployment's problem, not the event's: 503 with
    Retry-After, so clients keep the event and send it again, and once the
    topic exists the same event is stored."""
    topic = unique("src-missing")
    eng = source_engine(engines, kafka, tmp_path, {topic: "kyc-verified"}, retry_after_s=1,
                        kafka_props={"allow.auto.create.topics": "false",
                                     "topic.metadata.propagation.max.ms": "300",
                                     "topic.metadata.refresh.interval.ms": "500"}).start()
    client = Client(source_addr(eng))
    event = kyc("c-1", 1, eventId=str(uuid.uuid4()))
    # The first is refused by the broker; once librdkafka's metadata knows
    # the topic is missing, the next is refused by the producer at once.
    for _ in range(2):
        status, resp, body = client.post(topic, event)
        assert status == 503, body
        assert resp.getheader("Retry-After") == "1"
        assert "retry with the same eventId" in body["error"], body
    assert "Unknown topic" in body["error"], body
    create_topic(kafka, topic, 1)
    deadline = time.time() + 30
    while status != 202 and time.time() < deadline:
        time.sleep(0.5)
        status, resp, body = client.post(topic, event)
    assert status == 202, body
    client.close()
    got = records(kafka, topic, 1)
    assert [v["eventId"] for _, v in got.values()] == [event["eventId"]]
    assert eng.stop() == 0


def test_a_full_producer_queue_is_an_immediate_503_and_stops_the_batch(kafka, engines, tmp_path):
    topic = unique("src-full")
    # One record fills the queue, and with no broker it never drains.
    eng = source_engine(engines, {"KAFKA_BOOTSTRAP": "127.0.0.1:1"}, tmp_path,
                        {topic: "kyc-verified"}, kafka_props={"queue.buffering.max.messages": "1"},
                        ack_timeout_ms=1000, engine_extra={"shutdown_grace_ms": 2000}).start()
    client = Client(source_addr(eng))
    assert client.post(topic, kyc("c-1", 0))[0] == 503  # queued, then the ack timeout
    t0 = time.time()
    status, resp, body = client.post(topic, kyc("c-1", 1))
    assert status == 503 and resp.getheader("Retry-After") == "1"
    assert time.time() - t0 < 0.5, "refused at once, not after the ack timeout"
    assert body["error"].startswith("the producer queue is full"), body
    lines = [json.dumps(kyc("c-1", 2)), "{bad", json.dumps(kyc("c-2", 3))]
    status, _, results = client.post(topic, "\n".join(lines), "application/x-ndjson")
    assert status == 503
    assert [r["status"] for r in results] == [503, 400, 503]
    assert results[0]["error"].startswith("the producer queue is full")
    assert results[2]["error"].startswith("not produced: the producer refused an earlier event")
    client.close()
    assert eng.stop() == 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateBroker:
    """A broker of this test's own (scripts/kafka-start with its own state dir
    and ports), so that stopping it disturbs no other test."""

    def __init__(self, tmp_path):
        import os
        self.env = dict(os.environ, CONNECTD_STACK_DIR=str(tmp_path / "stack"),
                        KAFKA_PLAINTEXT_PORT=str(free_port()), KAFKA_SASL_PORT=str(free_port()),
                        KAFKA_CONTROLLER_PORT=str(free_port()))
        self.bootstrap = "127.0.0.1:" + self.env["KAFKA_PLAINTEXT_PORT"]

    def script(self, name, *args):
        p = subprocess.run([str(ROOT / "scripts" / name), *args], env=self.env,
                           capture_output=True, timeout=240)
        assert p.returncode == 0, p.stderr.decode(errors="replace")[-3000:]

    def start(self):
        self.script("kafka-start")

    def stop(self):
        self.script("kafka-stop")

    def purge(self):
        self.script("kafka-stop", "--purge")


def test_broker_stopped_mid_run_gets_503s_and_every_202_is_in_kafka(engines, tmp_path):
    broker = PrivateBroker(tmp_path)
    broker.start()
    try:
        topic = unique("src-outage")
        p = subprocess.run(["node", str(ROOT / "scripts" / "kafka-admin.js"), "create-topic",
                            topic, "3"], capture_output=True, timeout=120,
                           env=dict(broker.env, KAFKA_BOOTSTRAP=broker.bootstrap))
        assert p.returncode == 0, p.stderr.decode(errors="replace")
        eng = source_engine(engines, {"KAFKA_BOOTSTRAP": broker.bootstrap}, tmp_path,
                            {topic: "kyc-verified"}, ack_timeout_ms=1500,
                            kafka_props={"reconnect.backoff.max.ms": "500"},
                            engine_extra={"shutdown_grace_ms": 5000}).start()
        addr = source_addr(eng)
        answers = []  # (eventId, status, body, Retry-After)
        done = threading.Event()

        def poster():
            client = Client(addr, timeout=30)
            i = 0
            while not done.is_set():
                ev = kyc(f"c-{i % 7}", i, eventId=str(uuid.uuid4()))
                try:
                    status, resp, body = client.post(topic, ev)
                except (OSError, http.client.HTTPException):
                    client.close()
                    client = Client(addr, timeout=30)
                    continue
                answers.append((ev["eventId"], status, body, resp.getheader("Retry-After")))
                i += 1
            client.close()

        def wait_for(pred, timeout, what):
            deadline = time.time() + timeout
            while time.time() < deadline:
                if pred():
                    return
                time.sleep(0.05)
            raise AssertionError(f"{what}: {[(a[1], a[2]) for a in answers[-5:]]}")

        t = threading.Thread(target=poster)
        t.start()
        try:
            wait_for(lambda: sum(a[1] == 202 for a in answers) >= 50, 60, "no 202s")
            broker.stop()
            mark = len(answers)
            wait_for(lambda: sum(a[1] == 503 for a in answers[mark:]) >= 3, 60,
                     "no 503 with the broker down")
            broker.start()
            mark2 = len(answers)
            wait_for(lambda: sum(a[1] == 202 for a in answers[mark2:]) >= 50, 90,
                     "no 202 after the broker came back")
        finally:
            done.set()
            t.join(timeout=60)
        assert {a[1] for a in answers} <= {202, 503}, {a[1] for a in answers}
        assert all(a[3] for a in answers if a[1] == 503), "every 503 has Retry-After"
        accepted = {a[0]: (a[2]["partition"], a[2]["offset"]) for a in answers if a[1] == 202}
        out = kcat(["-b", broker.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q",
                    "-f", "%p\t%o\t%s\n"], timeout=120).stdout.decode()
        stored = {}
        for line in out.splitlines():
            p_, o_, v = line.split("\t", 2)
            stored.setdefault(json.loads(v)["eventId"], []).append((int(p_), int(o_)))
        missing = [e for e, pos in accepted.items() if pos not in stored.get(e, [])]
        assert not missing, f"{len(missing)} of {len(accepted)} events answered 202 are not in Kafka"
        sent = {a[0] for a in answers}
        assert set(stored) <= sent, "nothing in Kafka that was not sent"
        late = sum(1 for a in answers if a[1] == 503 and a[0] in stored)
        print(f"{len(accepted)} answered 202, all stored; {len(answers) - len(accepted)} "
              f"answered 503, of which {late} were stored after all (retry with the same eventId)")
        assert eng.stop() == 0
    finally:
        broker.purge()


def test_sigterm_answers_requests_in_flight_then_exits_0(kafka, engines, tmp_path):
    topic = unique("src-term")
    create_topic(kafka, topic, 1)
    # linger.ms holds each record in the producer for 1.5 s: the request is
    # still waiting for its delivery report when SIGTERM arrives.
    eng = source_engine(engines, kafka, tmp_path, {topic: "kyc-verified"},
                        kafka_props={"linger.ms": "1500"}).start()
    addr = source_addr(eng)
    result = {}

    def post():
        c = Client(addr)
        t0 = time.time()
        result["status"], _, result["body"] = c.post(topic, kyc("c-1", 1))
        result["took"] = time.time() - t0
        c.close()

    t = threading.Thread(target=post)
    t.start()
    time.sleep(0.5)
    eng.proc.send_signal(signal.SIGTERM)
    eng.wait_log("stopping: no new connections; answering 1 request(s) in flight", timeout=5)
    # New connections are refused from now on.
    time.sleep(0.2)
    with pytest.raises(OSError):
        socket.create_connection(addr, timeout=2).close()
    t.join(timeout=30)
    assert result.get("status") == 202, result
    assert result["took"] > 1.0
    # One SIGTERM is all it takes (ECS sends one, then SIGKILL).
    assert eng.proc.wait(timeout=30) == 0, eng.logs()[-3000:]
    assert "[ingest/http] stopped" in eng.logs()
    found = records(kafka, topic, expect=1)
    assert list(found) == [(result["body"]["partition"], result["body"]["offset"])]


def test_validate_reports_source_configuration_errors(tmp_path):
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    shutil.copy(SCHEMAS / "kyc-verified.json", schemas / "kyc-verified.json")
    (schemas / "bad-schema.json").write_text(json.dumps(
        {"type": "object", "properties": {"x": {"type": "string", "pattern": "^a"}}}))
    (tmp_path / "connectd.json").write_text(json.dumps({"kafka": {"bootstrap.servers": "x:1"}}))

    def validate(source):
        (tmp_path / "p.json").write_text(json.dumps({"name": "p", "source": dict(
            {"plugin": "http", "topics": ["kyc-verified"], "schemas_dir": str(schemas)},
            **source)}))
        p = subprocess.run([str(CONNECTD), "validate", "-c", str(tmp_path / "connectd.json")],
                           capture_output=True, text=True, timeout=30)
        return p.returncode, p.stdout

    assert validate({})[0] == 0
    rc, out = validate({"topics": ["kyc-verified", "missing-topic"]})
    assert rc == 1 and f"{tmp_path}/p.json: source: schemas_dir: no schema for topic " \
        "missing-topic" in out, out
    rc, out = validate({"topics": ["bad-schema"]})
    assert rc == 1 and "properties.x.pattern: keyword not supported" in out, out
    rc, out = validate({"api_keys": ["plaintext-key"]})
    assert rc == 1 and "api_keys[0]: must be \"sha256:\"" in out and "plaintext-key" not in out
    rc, out = validate({"key": "customerId"})
    assert rc == 1 and "key: " in out, out
    rc, out = validate({"topics": ["no/slash"]})
    assert rc == 1 and "topics[0]" in out, out
    rc, out = validate({"jwt_public_key": "not a pem"})
    assert rc == 1 and "jwt_public_key" in out, out
    rc, out = validate({"topics": []})
    assert rc == 1, out


def test_the_repository_pipelines_validate_with_the_ingest_source():
    p = subprocess.run([str(CONNECTD), "validate", "-c", str(ROOT / "pipelines" / "connectd.json")],
                       capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "ingest (source)" in p.stdout
