"""sink-dynamodb against moto's DynamoDB on loopback: batched puts, updates,
conditional (idempotent, stale-proof) writes, TTL, dead-lettering of
validation errors, retries through a fault-injecting proxy, and SigV4 + IAM
checks on a second moto server with auth switched on."""
import http.client
import http.server
import json
import os
import socket
import subprocess
import threading
import time
from urllib.parse import urlparse

import boto3
import pytest

from conftest import ROOT, committed_offsets, consume_all, create_topic, produce, unique

REGION = "eu-west-1"


def moto_endpoint():
    ep = os.environ.get("MOTO_ENDPOINT")
    if not ep:
        pytest.fail("run through scripts/run-tests (moto.env): MOTO_ENDPOINT not set")
    return ep


def ddb(endpoint=None, key="testing", secret="testing"):
    return boto3.client("dynamodb", endpoint_url=endpoint or moto_endpoint(), region_name=REGION,
                        aws_access_key_id=key, aws_secret_access_key=secret)


def create_table(client, name, keys=("pk",), types=None):
    types = types or {}
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": k, "KeyType": "HASH" if i == 0 else "RANGE"}
                   for i, k in enumerate(keys)],
        AttributeDefinitions=[{"AttributeName": k, "AttributeType": types.get(k, "S")}
                              for k in keys],
        BillingMode="PAY_PER_REQUEST")


def scan_all(client, table):
    items, kw = [], {}
    while True:
        r = client.scan(TableName=table, **kw)
        items.extend(r["Items"])
        if "LastEvaluatedKey" not in r:
            return items
        kw["ExclusiveStartKey"] = r["LastEvaluatedKey"]


def aws_env(endpoint=None, key="testing", secret="testing"):
    return {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret, "AWS_REGION": REGION,
            "DDB_ENDPOINT": endpoint or moto_endpoint()}


def sink(table, **opts):
    return dict({"plugin": "dynamodb", "name": "ddb", "table": table, "region": REGION,
                 "endpoint": "${DDB_ENDPOINT}"}, **opts)


def pipeline(name, topic, s, **extra):
    p = {"name": name, "topics": [topic], "sinks": [s],
         "batch": {"max_records": 200, "linger_ms": 5},
         "retry": {"initial_ms": 50, "max_ms": 500, "max_attempts": 50}}
    p.update(extra)
    return p


def events(n, keys, start=0, **extra):
    for i in range(start, start + n):
        cust = f"cust-{i % keys:03d}"
        v = {"eventId": f"e-{i:05d}", "customerId": cust, "seq": i // keys,
             "amount": "12.50", "data": {"status": f"S{i // keys}", "tags": ["a", "b"]}}
        v.update(extra)
        yield cust, json.dumps(v, separators=(",", ":")).encode()


def wait_until(pred, timeout=90, proc=None, what="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = pred()
        if last:
            return last
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"connectd exited {proc.returncode} while waiting for {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def start(engines, kafka, pipelines, env):
    return engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]}, pipelines, env=env).start()


def test_put_of_1000_records_goes_through_batch_write_item_and_every_item_is_written(
        kafka, engines):
    client = ddb()
    table, topic = unique("ddb-put"), unique("ddb-put")
    create_table(client, table, ("eventId",))
    create_topic(kafka, topic, 3)
    produce(kafka, topic, events(1000, 50))
    s = sink(table, key_attributes=["eventId"],
             item={"eventId": "${/eventId}", "customerId": "${/customerId}", "seq": "${/seq}",
                   "amount": "${/amount}", "data": "${/data}", "offset": "${offset}"},
             types={"amount": "N", "data.tags": "SS"})
    eng = start(engines, kafka, {"p": pipeline("ddb-put", topic, s)}, aws_env())
    wait_until(lambda: len(scan_all(client, table)) >= 1000, proc=eng.proc, what="1000 items")
    items = {it["eventId"]["S"]: it for it in scan_all(client, table)}
    assert len(items) == 1000
    for i in range(1000):
        it = items[f"e-{i:05d}"]
        assert it["customerId"] == {"S": f"cust-{i % 50:03d}"}
        assert it["seq"] == {"N": str(i // 50)}
        assert it["amount"] == {"N": "12.50"}
        assert it["data"]["M"]["status"] == {"S": f"S{i // 50}"}
        assert sorted(it["data"]["M"]["tags"]["SS"]) == ["a", "b"]
    assert "BatchWriteItem" in eng.logs()
    assert eng.stop() == 0
    assert sum(committed_offsets(kafka, "connectd.ddb-put", topic).values()) == 1000


def test_put_with_ttl_writes_the_expiry_under_an_escaped_attribute_name(kafka, engines):
    """The TTL member of a BatchWriteItem put: its name is escaped once at
    start-up (a quote and a backslash in it), its value is now + ttl_seconds."""
    client = ddb()
    table, topic = unique("ddb-ttl"), unique("ddb-ttl")
    create_table(client, table, ("eventId",))
    create_topic(kafka, topic, 1)
    produce(kafka, topic, events(60, 6))
    name = 'exp"ires\\At'
    s = sink(table, key_attributes=["eventId"],
             item={"eventId": "${/eventId}", "seq": "${/seq}"},
             ttl_attribute=name, ttl_seconds=7200)
    eng = start(engines, kafka, {"p": pipeline("ddb-ttl", topic, s)}, aws_env())
    wait_until(lambda: committed_offsets(kafka, "connectd.ddb-ttl", topic) == {0: 60},
               proc=eng.proc, what="commit of 60")
    now = time.time()
    items = scan_all(client, table)
    assert len(items) == 60
    for it in items:
        assert set(it) == {"eventId", "seq", name}, it
        assert now + 7200 - 120 <= int(it[name]["N"]) <= now + 7200 + 5
    assert eng.stop() == 0


def test_update_sets_attributes_in_per_key_order_with_ttl(kafka, engines):
    client = ddb()
    table, topic = unique("ddb-upd"), unique("ddb-upd")
    create_table(client, table, ("customerId",))
    create_topic(kafka, topic, 1)
    produce(kafka, topic, events(200, 10))
    s = sink(table, operation="update", key={"customerId": "${/customerId}"},
             update={"status": "${/data/status}", "lastEvent": "${/eventId}",
                     "lastOffset": "${offset}"},
             ttl_attribute="expiresAt", ttl_seconds=3600)
    eng = start(engines, kafka, {"p": pipeline("ddb-upd", topic, s)}, aws_env())
    wait_until(lambda: committed_offsets(kafka, "connectd.ddb-upd", topic) == {0: 200},
               proc=eng.proc, what="commit of 200")
    now = time.time()
    items = {it["customerId"]["S"]: it for it in scan_all(client, table)}
    assert len(items) == 10
    for c in range(10):
        it = items[f"cust-{c:03d}"]
        # The last event of each key won: updates were applied in order.
        assert it["status"] == {"S": "S19"}
        assert it["lastEvent"] == {"S": f"e-{190 + c:05d}"}
        assert it["lastOffset"] == {"N": str(190 + c)}
        assert now + 3600 - 120 <= int(it["expiresAt"]["N"]) <= now + 3600 + 5
    assert eng.stop() == 0


def test_replaying_the_same_events_twice_leaves_identical_items(kafka, engines):
    client = ddb()
    table, topic = unique("ddb-replay"), unique("ddb-replay")
    create_table(client, table, ("eventId",))
    create_topic(kafka, topic, 2)
    produce(kafka, topic, events(300, 7))
    s = sink(table, condition="attribute_not_exists(eventId)",
             item={"eventId": "${/eventId}", "customerId": "${/customerId}",
                   "partition": "${partition}", "offset": "${offset}", "payload": "${/}"})
    scans = []
    for run in ("a", "b"):
        name = f"ddb-replay-{run}"
        eng = start(engines, kafka, {"p": pipeline(name, topic, s)}, aws_env())
        wait_until(lambda: sum(committed_offsets(kafka, f"connectd.{name}", topic).values())
                   == 300, proc=eng.proc, what="commit of 300")
        assert eng.stop() == 0
        scans.append(sorted(scan_all(client, table), key=lambda it: it["eventId"]["S"]))
    assert len(scans[0]) == 300
    assert scans[0] == scans[1]


def test_an_older_offset_does_not_overwrite_a_newer_one(kafka, engines):
    client = ddb()
    table, topic = unique("ddb-stale"), unique("ddb-stale")
    create_table(client, table, ("customerId",))
    create_topic(kafka, topic, 1)
    # cust-000 already holds a write from a far newer offset.
    client.put_item(TableName=table, Item={"customerId": {"S": "cust-000"},
                                           "offset": {"N": "1000000"}, "status": {"S": "NEWER"}})
    produce(kafka, topic, events(40, 2))
    s = sink(table, item={"customerId": "${/customerId}", "offset": "${offset}",
                          "status": "${/data/status}"},
             condition="attribute_not_exists(#o) OR #o < :o",
             condition_names={"#o": "offset"}, condition_values={":o": "${offset}"})
    eng = start(engines, kafka, {"p": pipeline("ddb-stale", topic, s)}, aws_env())
    wait_until(lambda: committed_offsets(kafka, "connectd.ddb-stale", topic) == {0: 40},
               proc=eng.proc, what="commit of 40")
    items = {it["customerId"]["S"]: it for it in scan_all(client, table)}
    assert items["cust-000"]["status"] == {"S": "NEWER"}
    assert items["cust-000"]["offset"] == {"N": "1000000"}
    assert items["cust-001"]["offset"] == {"N": "39"}
    assert items["cust-001"]["status"] == {"S": "S19"}
    # A replay from an older offset is refused by the condition too (and OK).
    client.put_item(TableName=table, Item={"customerId": {"S": "cust-001"},
                                           "offset": {"N": "39"}, "status": {"S": "KEEP"}})
    assert eng.stop() == 0
    eng2 = start(engines, kafka, {"p": pipeline("ddb-stale-2", topic, s)}, aws_env())
    wait_until(lambda: committed_offsets(kafka, "connectd.ddb-stale-2", topic) == {0: 40},
               proc=eng2.proc, what="commit of 40 (replay)")
    items = {it["customerId"]["S"]: it for it in scan_all(client, table)}
    assert items["cust-001"]["status"] == {"S": "KEEP"}
    assert eng2.stop() == 0


def dlq_records(kafka, dlq, expect):
    out = consume_all(kafka, dlq, fmt="%k\t%s\t%h\n", expect=expect).strip("\n").split("\n")
    got = []
    for line in out:
        if not line:
            continue
        key, value, headers = line.split("\t")
        hd = {}
        for kv in headers.split(","):
            k, _, v = kv.partition("=")
            hd[k] = v
        got.append((key, json.loads(value), hd))
    return got


def test_a_validation_exception_is_dead_lettered_with_the_aws_message(kafka, engines):
    client = ddb()
    table, topic = unique("ddb-val"), unique("ddb-val")
    dlq = topic + ".dlq"
    create_table(client, table, ("pk",))
    create_topic(kafka, topic, 1)
    create_topic(kafka, dlq, 1)
    recs = []
    for i in range(30):
        pk = "" if i == 7 else (i if i == 19 else f"k-{i}")  # empty key; a number for an S key
        doc = {"pk": pk, "i": i}
        if i == 12:
            del doc["pk"]  # the item cannot be rendered: FATAL before any request
        recs.append((f"k-{i}", json.dumps(doc).encode()))
    produce(kafka, topic, recs)
    s = sink(table, item={"pk": "${/pk}", "i": "${/i}"})
    eng = start(engines, kafka, {"p": pipeline(
        "ddb-val", topic, s, errors={"tolerance": "all", "dead_letter_topic": dlq})}, aws_env())
    wait_until(lambda: committed_offsets(kafka, "connectd.ddb-val", topic) == {0: 30},
               proc=eng.proc, what="commit of 30")
    got = dlq_records(kafka, dlq, expect=3)
    assert sorted(v["i"] for _, v, _ in got) == [7, 12, 19]
    for _, v, hd in got:
        if v["i"] == 12:
            assert "/pk" in hd["connectd.error.message"], hd
        else:
            assert hd["connectd.error.message"].startswith("ValidationException: "), hd
        assert hd["connectd.error.class"] != ""
    # Every other record was written, each exactly as produced (the bad ones
    # did not take their BatchWriteItem neighbours down with them, and the
    # unrenderable one left nothing behind in the batch's buffer).
    items = scan_all(client, table)
    assert sorted(int(it["i"]["N"]) for it in items) == \
        [i for i in range(30) if i not in (7, 12, 19)]
    for it in items:
        assert it["pk"] == {"S": f"k-{it['i']['N']}"}, it
    assert eng.stop() == 0


class FaultProxy:
    """Forwards to moto; answers the first requests with throttling, a 500
    and a partial UnprocessedItems (it forwards only half of the items)."""

    def __init__(self, target, kinds=None, mangle=False):
        """kinds: request number -> fault (default: the mixed sequence
        below); mangle: UnprocessedItems lists the items it held back with
        an attribute changed, so they match nothing the engine sent."""
        self.target = urlparse(target)
        self.lock = threading.Lock()
        self.n = 0
        self.seen = {"throttle": 0, "500": 0, "partial": 0, "forwarded": 0}
        proxy = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy.lock:
                    proxy.n += 1
                    n = proxy.n
                kind = (kinds if kinds is not None else
                        {1: "throttle", 2: "500", 3: "partial", 5: "throttle", 6: "partial",
                         8: "500"}).get(n)
                if kind == "throttle":
                    proxy.seen[kind] += 1
                    return self.answer(400, {"__type": "com.amazonaws.dynamodb.v20120810#"
                                             "ProvisionedThroughputExceededException",
                                             "message": "slow down"})
                if kind == "500":
                    proxy.seen[kind] += 1
                    return self.answer(500, {"__type": "InternalServerError", "message": "x"})
                unprocessed = []
                if kind == "partial":
                    req = json.loads(body)
                    (table, items), = req["RequestItems"].items()
                    if len(items) >= 2:
                        proxy.seen[kind] += 1
                        keep = len(items) // 2
                        unprocessed = items[keep:]
                        req["RequestItems"][table] = items[:keep]
                        if mangle:
                            unprocessed = json.loads(json.dumps(unprocessed))
                            for it in unprocessed:
                                it["PutRequest"]["Item"]["_mangled"] = {"S": "x"}
                        body = json.dumps(req).encode()
                status, rbody = proxy.forward(self.headers, body)
                proxy.seen["forwarded"] += 1
                if unprocessed and status == 200:
                    r = json.loads(rbody)
                    r["UnprocessedItems"] = {table: unprocessed}
                    rbody = json.dumps(r).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("Content-Length", str(len(rbody)))
                self.end_headers()
                self.wfile.write(rbody)

            def answer(self, status, obj):
                b = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("Content-Length", str(len(b)))
                self.end_headers()
                self.wfile.write(b)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def forward(self, headers, body):
        c = http.client.HTTPConnection(self.target.hostname, self.target.port, timeout=30)
        hd = {k: v for k, v in headers.items() if k.lower() not in ("content-length", "host")}
        hd["Content-Length"] = str(len(body))
        c.request("POST", "/", body=body, headers=hd)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_condition_value_that_cannot_render_is_dead_lettered_naming_the_field(kafka, engines):
    """A record missing what condition_values needs is FATAL with the
    template's reason, before any request (it used to go out as a PutItem
    with an empty body, and its reason was DynamoDB's parse error)."""
    client = ddb()
    table, topic = unique("ddb-cv"), unique("ddb-cv")
    dlq = topic + ".dlq"
    create_table(client, table, ("pk",))
    create_topic(kafka, topic, 1)
    create_topic(kafka, dlq, 1)
    recs = []
    for i in range(10):
        doc = {"pk": f"k-{i}", "version": i}
        if i == 4:
            del doc["version"]
        recs.append((f"k-{i}", json.dumps(doc).encode()))
    produce(kafka, topic, recs)
    s = sink(table, item={"pk": "${/pk}", "v": "${/version}"},
             condition="attribute_not_exists(pk) OR #v < :v", condition_names={"#v": "v"},
             condition_values={":v": "${/version:-0}", ":w": "${/version}"})
    s["condition"] = "attribute_not_exists(pk) OR (#v < :v AND #v < :w)"
    s["item"] = {"pk": "${/pk}"}
    eng = start(engines, kafka, {"p": pipeline(
        "ddb-cv", topic, s, errors={"tolerance": "all", "dead_letter_topic": dlq})}, aws_env())
    wait_until(lambda: committed_offsets(kafka, "connectd.ddb-cv", topic) == {0: 10},
               proc=eng.proc, what="commit of 10")
    got = dlq_records(kafka, dlq, expect=1)
    assert [v.get("pk") for _, v, _ in got] == ["k-4"]
    msg = got[0][2]["connectd.error.message"]
    assert "/version" in msg and "Exception" not in msg, msg
    assert sorted(it["pk"]["S"] for it in scan_all(client, table)) == \
        sorted(f"k-{i}" for i in range(10) if i != 4)
    assert eng.stop() == 0


def test_throttling_5xx_and_unprocessed_items_are_retried_until_every_item_is_written(
        kafka, engines):
    client = ddb()
    table, topic = unique("ddb-fault"), unique("ddb-fault")
    create_table(client, table, ("eventId",))
    create_topic(kafka, topic, 1)
    produce(kafka, topic, events(500, 20))
    proxy = FaultProxy(moto_endpoint())
    try:
        s = sink(table, key_attributes=["eventId"], max_in_flight=2,
                 item={"eventId": "${/eventId}", "customerId": "${/customerId}",
                       "seq": "${/seq}"})
        eng = start(engines, kafka, {"p": pipeline("ddb-fault", topic, s)},
                    aws_env(endpoint=proxy.url))
        wait_until(lambda: committed_offsets(kafka, "connectd.ddb-fault", topic) == {0: 500},
                   proc=eng.proc, what="commit of 500")
        items = scan_all(client, table)
        assert sorted(it["eventId"]["S"] for it in items) == [f"e-{i:05d}" for i in range(500)]
        assert proxy.seen["throttle"] == 2 and proxy.seen["500"] == 2, proxy.seen
        assert proxy.seen["partial"] == 2, proxy.seen
        metrics = http.client.HTTPConnection(urlparse(eng.admin_url()).netloc)
        metrics.request("GET", "/metrics")
        text = metrics.getresponse().read().decode()
        assert "dynamodb_unprocessed_items_total" in text
        assert eng.stop() == 0
    finally:
        proxy.close()


def test_unprocessed_items_that_match_nothing_sent_are_all_retried(kafka, engines):
    """An UnprocessedItems entry the engine cannot match with an item it
    sent (DynamoDB answering with it changed, or an answer it cannot read)
    must not leave that item reported OK unwritten: the whole request is
    retried (re-putting the others is harmless)."""
    client = ddb()
    table, topic = unique("ddb-mangle"), unique("ddb-mangle")
    create_table(client, table, ("eventId",))
    create_topic(kafka, topic, 1)
    produce(kafka, topic, events(100, 10))
    proxy = FaultProxy(moto_endpoint(), kinds={1: "partial", 2: "partial"}, mangle=True)
    try:
        s = sink(table, key_attributes=["eventId"], max_in_flight=1,
                 item={"eventId": "${/eventId}", "customerId": "${/customerId}",
                       "seq": "${/seq}"})
        eng = start(engines, kafka, {"p": pipeline("ddb-mangle", topic, s)},
                    aws_env(endpoint=proxy.url))
        wait_until(lambda: committed_offsets(kafka, "connectd.ddb-mangle", topic) == {0: 100},
                   proc=eng.proc, what="commit of 100")
        items = scan_all(client, table)
        assert sorted(it["eventId"]["S"] for it in items) == [f"e-{i:05d}" for i in range(100)]
        assert not any("_mangled" in it for it in items)
        assert proxy.seen["partial"] == 2, proxy.seen
        assert "cannot be matched with" in eng.logs()
        assert eng.stop() == 0
    finally:
        proxy.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def moto_auth():
    """A second moto server with signature and IAM checks on after the first
    7 calls (the test's setup)."""
    port = free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="7")
    proc = subprocess.Popen([str(ROOT / ".deps/venv/bin/moto_server"), "-H", "127.0.0.1",
                             "-p", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/moto-api/")
            c.getresponse().read()
            break
        except OSError:
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_sigv4_and_iam_are_checked_by_moto_and_a_wrong_secret_is_dead_lettered(
        kafka, engines, moto_auth):
    table, topic = unique("ddb-auth"), unique("ddb-auth")
    root = ddb(moto_auth)
    iam = boto3.client("iam", endpoint_url=moto_auth, region_name=REGION,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    create_table(root, table, ("eventId",))                                   # 1
    iam.create_user(UserName="writer")                                        # 2
    wk = iam.create_access_key(UserName="writer")["AccessKey"]                # 3
    iam.put_user_policy(UserName="writer", PolicyName="write", PolicyDocument=json.dumps({  # 4
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow",
                       "Action": ["dynamodb:BatchWriteItem", "dynamodb:PutItem",
                                  "dynamodb:UpdateItem"],
                       # moto authorizes DynamoDB calls against resource "*" only (a
                       # table ARN here is denied by moto 5.2.5), so the actions are
                       # what this policy limits.
                       "Resource": "*"}]}))
    iam.create_user(UserName="reader")                                        # 5
    rk = iam.create_access_key(UserName="reader")["AccessKey"]                # 6
    iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=json.dumps({  # 7
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["dynamodb:Scan"], "Resource": "*"}]}))
    reader = ddb(moto_auth, rk["AccessKeyId"], rk["SecretAccessKey"])
    # Auth is on now: the root's dummy keys are refused.
    with pytest.raises(Exception):
        ddb(moto_auth).scan(TableName=table)

    create_topic(kafka, topic, 1)
    produce(kafka, topic, events(60, 6))
    s = sink(table, key_attributes=["eventId"],
             item={"eventId": "${/eventId}", "customerId": "${/customerId}"})
    eng = start(engines, kafka, {"p": pipeline("ddb-auth", topic, s)},
                aws_env(moto_auth, wk["AccessKeyId"], wk["SecretAccessKey"]))
    wait_until(lambda: committed_offsets(kafka, "connectd.ddb-auth", topic) == {0: 60},
               proc=eng.proc, what="commit of 60")
    assert len(scan_all(reader, table)) == 60
    assert eng.stop() == 0

    # The same user with a wrong secret: every record is refused (FATAL) and
    # dead-lettered, nothing more is written.
    topic2 = unique("ddb-auth-bad")
    dlq = topic2 + ".dlq"
    create_topic(kafka, topic2, 1)
    create_topic(kafka, dlq, 1)
    produce(kafka, topic2, events(5, 5, start=1000))
    eng2 = start(engines, kafka, {"p": pipeline(
        "ddb-auth-bad", topic2, s, errors={"tolerance": "all", "dead_letter_topic": dlq})},
        aws_env(moto_auth, wk["AccessKeyId"], "wrong-secret"))
    got = dlq_records(kafka, dlq, expect=5)
    assert len(got) == 5, got
    msg = got[0][2]["connectd.error.message"]
    assert msg.startswith("SignatureDoesNotMatch: "), msg
    assert len(scan_all(reader, table)) == 60
    assert eng2.stop() == 0


def test_no_aws_credentials_at_all_is_a_clear_start_up_error(kafka, engines, tmp_path):
    """Neither environment keys nor a container endpoint: the pipeline does
    not start, and the log says what was tried (not a crash at the first
    write)."""
    none = {k: None for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                              "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                              "AWS_CONTAINER_CREDENTIALS_FULL_URI")}
    env = dict(none, DDB_ENDPOINT="http://127.0.0.1:1", AWS_REGION=REGION)
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]},
                  {"p": pipeline("no-creds", unique("no-creds"),
                                 sink("t", item={"pk": "${/customerId}"}))}, env=env).start()
    rc = eng.proc.wait(timeout=30)
    logs = eng.logs()
    assert rc == 1, logs[-2000:]
    assert "[no-creds] failed to start:" in logs
    assert "no AWS credentials" in logs and "AWS_ACCESS_KEY_ID" in logs and \
        "AWS_CONTAINER_CREDENTIALS" in logs, logs[-2000:]
