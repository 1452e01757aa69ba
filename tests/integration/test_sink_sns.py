"""sink-sns against moto's SNS on loopback, read back through SNS → SQS
subscriptions (raw delivery on some queues, the JSON envelope with Subject on
others): PublishBatch with subject, message and attributes; FIFO group and
deduplication ids; `when`; dead-lettering of a missing topic and of an
oversized message; throttling against a responder that answers SNS's real
Throttling error and checks SigV4's shape; exactly-once after a SIGKILL
through Redis duplicate suppression; Redis dying mid-run in both
on_redis_error modes; SigV4 + IAM checked by a second moto with auth on."""
import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import time
from urllib.parse import urlparse

import boto3
import pytest

from conftest import ROOT, committed_offsets, consume_all, create_topic, produce, unique
from sns_throttle import SnsThrottleResponder

REGION = "eu-west-1"


def moto_endpoint():
    ep = os.environ.get("MOTO_ENDPOINT")
    if not ep:
        pytest.fail("run through scripts/run-tests (moto.env): MOTO_ENDPOINT not set")
    return ep


def redis_url():
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.fail("run through scripts/run-tests (redis.env): REDIS_URL not set")
    return url


def client(service, endpoint=None, key="testing", secret="testing"):
    return boto3.client(service, endpoint_url=endpoint or moto_endpoint(), region_name=REGION,
                        aws_access_key_id=key, aws_secret_access_key=secret)


def make_topic(sns, name, fifo=False):
    if fifo:
        return sns.create_topic(Name=name + ".fifo", Attributes={"FifoTopic": "true"})["TopicArn"]
    return sns.create_topic(Name=name)["TopicArn"]


def make_queue(sns, sqs, topic_arn, name, raw, fifo=False):
    attrs = {"FifoQueue": "true"} if fifo else {}
    url = sqs.create_queue(QueueName=name + (".fifo" if fifo else ""), Attributes=attrs)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn,
                  Attributes={"RawMessageDelivery": "true" if raw else "false"})
    return url


class Queue:
    """Everything that arrived in one SQS queue (read, never re-delivered:
    each message read is deleted)."""

    def __init__(self, sqs, url):
        self.sqs, self.url, self.msgs = sqs, url, []

    def drain(self):
        while True:
            r = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10,
                                         AttributeNames=["All"], MessageAttributeNames=["All"],
                                         VisibilityTimeout=600)
            got = r.get("Messages", [])
            if not got:
                return self.msgs
            self.msgs.extend(got)
            self.sqs.delete_message_batch(QueueUrl=self.url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])

    def wait(self, n, timeout=90, proc=None, settle=1.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.drain()
            if len(self.msgs) >= n:
                time.sleep(settle)  # anything extra (a duplicate) arrives too
                return self.drain()
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"connectd exited {proc.returncode}")
            time.sleep(0.2)
        raise AssertionError(f"{len(self.msgs)} of {n} messages arrived")


def aws_env(endpoint=None, key="testing", secret="testing"):
    return {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret, "AWS_REGION": REGION,
            "SNS_ENDPOINT": endpoint or moto_endpoint()}


def sink(topic_arn, **opts):
    return dict({"plugin": "sns", "name": "notify", "topic_arn": topic_arn,
                 "endpoint": "${SNS_ENDPOINT}", "dedupe_prefix": unique("sns-test") + ":"},
                **opts)


def pipeline(name, topic, sinks, **extra):
    p = {"name": name, "topics": [topic], "sinks": sinks if isinstance(sinks, list) else [sinks],
         "batch": {"max_records": 200, "linger_ms": 20},
         "retry": {"initial_ms": 50, "max_ms": 1000, "max_attempts": 1000,
                   "max_elapsed_ms": 600000}}
    p.update(extra)
    return p


def events(n, keys=5, start=0, **extra):
    for i in range(start, start + n):
        cust = f"cust-{i % keys:03d}"
        v = {"eventId": f"e-{i:05d}", "customerId": cust, "seq": i // keys,
             "data": {"riskLevel": "HIGH" if i % 3 == 0 else "LOW", "score": i * 1.5,
                      "flags": ["pep", f"f{i}"]}}
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


def start(engines, kafka, pipelines, env, redis=None, **engine_extra):
    extra = dict({"redis_url": redis or redis_url()}, **engine_extra)
    return engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]}, pipelines, env=env,
                   engine_extra=extra).start()


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
        got.append((key, value, hd))
    return got


def metric(eng, name):
    """The metric's sum over its labels; -1 while the admin API does not
    answer (a restarted engine logs its new address a moment later)."""
    try:
        c = http.client.HTTPConnection(urlparse(eng.admin_url()).netloc, timeout=10)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
    except OSError:
        return -1
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
               if l.startswith(name + "{") or l.startswith(name + " "))


def test_publish_batch_delivers_subject_message_and_attributes(kafka, engines):
    sns, sqs = client("sns"), client("sqs")
    name = unique("sns-attrs")
    arn = make_topic(sns, name)
    raw = Queue(sqs, make_queue(sns, sqs, arn, name + "-raw", raw=True))
    env_q = Queue(sqs, make_queue(sns, sqs, arn, name + "-env", raw=False))
    topic = unique("sns-attrs")
    create_topic(kafka, topic, 2)
    produce(kafka, topic, events(60))
    s = sink(arn, subject="Risk ${/data/riskLevel} for ${/customerId}",
             message={"customer": "${/customerId}", "event": "${/eventId}", "data": "${/data}",
                      "at": "${topic}/${offset}"},
             message_attributes={
                 "riskLevel": {"type": "String", "value": "${/data/riskLevel}"},
                 "score": {"type": "Number", "value": "${/data/score}"},
                 "flags": {"type": "String.Array", "value": "${/data/flags}"}})
    # moto 5.2.5 cannot hand a Binary attribute to a raw-delivery SQS queue
    # (ReceiveMessage fails with a 500): Binary goes to its own topic, read
    # through the JSON envelope.
    arn_bin = make_topic(sns, name + "-bin")
    bin_q = Queue(sqs, make_queue(sns, sqs, arn_bin, name + "-bin", raw=False))
    s_bin = sink(arn_bin, name="binary", message="${/eventId}",
                 message_attributes={"raw": {"type": "Binary", "value": "id:${/eventId}"}})
    eng = start(engines, kafka, {"p": pipeline("sns-attrs", topic, [s, s_bin])}, aws_env())
    raw.wait(60, proc=eng.proc)
    env_q.wait(60, proc=eng.proc)
    bin_q.wait(60, proc=eng.proc)
    assert len(raw.msgs) == 60 and len(env_q.msgs) == 60
    want = {v["eventId"]: v for v in (json.loads(b) for _, b in events(60))}

    seen = set()
    for m in raw.msgs:
        body = json.loads(m["Body"])
        v = want[body["event"]]
        assert set(body) == {"customer", "event", "data", "at"}
        assert body["customer"] == v["customerId"] and body["data"] == v["data"]
        assert body["at"].startswith(topic + "/")
        # Compact JSON, exactly as rendered.
        assert m["Body"] == json.dumps(body, separators=(",", ":"))
        a = m["MessageAttributes"]
        assert a["riskLevel"] == {"DataType": "String", "StringValue": v["data"]["riskLevel"]}
        assert a["score"]["DataType"] == "Number"
        assert float(a["score"]["StringValue"]) == v["data"]["score"]
        assert a["flags"]["DataType"] == "String.Array"
        assert json.loads(a["flags"]["StringValue"]) == v["data"]["flags"]
        assert set(a) == {"riskLevel", "score", "flags"}
        seen.add(body["event"])
    assert seen == set(want)

    seen = set()
    for m in env_q.msgs:
        envlp = json.loads(m["Body"])
        assert envlp["Type"] == "Notification" and envlp["TopicArn"] == arn
        body = json.loads(envlp["Message"])
        v = want[body["event"]]
        assert envlp["Subject"] == f"Risk {v['data']['riskLevel']} for {v['customerId']}"
        assert envlp["MessageAttributes"]["riskLevel"] == {
            "Type": "String", "Value": v["data"]["riskLevel"]}
        assert envlp["MessageAttributes"]["flags"]["Type"] == "String.Array"
        seen.add(body["event"])
    assert seen == set(want)

    seen = set()
    for m in bin_q.msgs:
        envlp = json.loads(m["Body"])
        assert "Subject" not in envlp or envlp["Subject"] is None
        assert envlp["MessageAttributes"] == {"raw": {
            "Type": "Binary",
            "Value": base64.b64encode(f"id:{envlp['Message']}".encode()).decode()}}
        seen.add(envlp["Message"])
    assert seen == set(want)
    assert "PublishBatch" in eng.logs()
    assert metric(eng, "sns_requests_total") < 60  # batched
    assert eng.stop() == 0
    assert sum(committed_offsets(kafka, "connectd.sns-attrs", topic).values()) == 60


def test_fifo_topic_carries_group_and_deduplication_ids_in_order(kafka, engines):
    sns, sqs = client("sns"), client("sqs")
    name = unique("sns-fifo")
    arn = make_topic(sns, name, fifo=True)
    q = Queue(sqs, make_queue(sns, sqs, arn, name, raw=True, fifo=True))
    topic = unique("sns-fifo")
    create_topic(kafka, topic, 1)
    produce(kafka, topic, events(40, keys=4))
    s = sink(arn, message="${/}", message_deduplication_id="dd-${/eventId}")
    eng = start(engines, kafka, {"p": pipeline("sns-fifo", topic, s)}, aws_env())
    q.wait(40, proc=eng.proc)
    assert len(q.msgs) == 40
    per_group = {}
    for m in q.msgs:
        body = json.loads(m["Body"])
        assert m["Attributes"]["MessageGroupId"] == body["customerId"]
        assert m["Attributes"]["MessageDeduplicationId"] == "dd-" + body["eventId"]
        per_group.setdefault(body["customerId"], []).append(body["seq"])
    assert sorted(per_group) == [f"cust-{i:03d}" for i in range(4)]
    for seqs in per_group.values():
        assert seqs == list(range(10)), seqs  # the order of each group kept
    assert "FIFO" in eng.logs()
    assert eng.stop() == 0


def test_when_publishes_only_matching_records_and_commits_the_rest(kafka, engines):
    sns, sqs = client("sns"), client("sqs")
    name = unique("sns-when")
    arn = make_topic(sns, name)
    q = Queue(sqs, make_queue(sns, sqs, arn, name, raw=True))
    topic = unique("sns-when")
    dlq = topic + ".dlq"
    create_topic(kafka, topic, 1)
    create_topic(kafka, dlq, 1)
    produce(kafka, topic, events(30))
    s = sink(arn, when={"path": "/data/riskLevel", "eq": "HIGH"}, message="${/eventId}")
    eng = start(engines, kafka, {"p": pipeline(
        "sns-when", topic, s, errors={"tolerance": "all", "dead_letter_topic": dlq})}, aws_env())
    wait_until(lambda: committed_offsets(kafka, "connectd.sns-when", topic) == {0: 30},
               proc=eng.proc, what="commit of 30")
    q.wait(10, proc=eng.proc, settle=2.0)
    assert sorted(m["Body"] for m in q.msgs) == [f"e-{i:05d}" for i in range(30) if i % 3 == 0]
    assert consume_all(kafka, dlq, timeout=5) == ""
    assert eng.stop() == 0


def test_the_same_event_produced_twice_is_published_once(kafka, engines):
    sns, sqs = client("sns"), client("sqs")
    name = unique("sns-twice")
    arn = make_topic(sns, name)
    q = Queue(sqs, make_queue(sns, sqs, arn, name, raw=True))
    topic = unique("sns-twice")
    create_topic(kafka, topic, 1)
    recs = list(events(20))
    recs = recs[:10] + recs[3:6] + recs[10:] + recs[:2]  # producer retries, in one batch
    produce(kafka, topic, recs)
    eng = start(engines, kafka, {"p": pipeline("sns-twice", topic,
                                               sink(arn, message="${/eventId}"))}, aws_env())
    wait_until(lambda: committed_offsets(kafka, "connectd.sns-twice", topic) == {0: 25},
               proc=eng.proc, what="commit of 25")
    q.wait(20, proc=eng.proc, settle=2.0)
    assert sorted(m["Body"] for m in q.msgs) == [f"e-{i:05d}" for i in range(20)]
    assert metric(eng, "sns_duplicates_suppressed_total") == 5
    assert eng.stop() == 0


def test_a_missing_topic_is_dead_lettered_with_the_sns_error_code(kafka, engines):
    topic = unique("sns-missing")
    dlq = topic + ".dlq"
    create_topic(kafka, topic, 1)
    create_topic(kafka, dlq, 1)
    produce(kafka, topic, events(12))
    arn = f"arn:aws:sns:{REGION}:123456789012:{unique('no-such-topic')}"
    eng = start(engines, kafka, {"p": pipeline(
        "sns-missing", topic, sink(arn),
        errors={"tolerance": "all", "dead_letter_topic": dlq})}, aws_env())
    got = dlq_records(kafka, dlq, expect=12)
    assert len(got) == 12, got
    for _, value, hd in got:
        assert hd["connectd.error.message"].startswith("NotFound: "), hd
        assert hd["connectd.error.sink"] == "notify"
    assert sorted(json.loads(v)["eventId"] for _, v, _ in got) == [f"e-{i:05d}" for i in range(12)]
    wait_until(lambda: committed_offsets(kafka, "connectd.sns-missing", topic) == {0: 12},
               proc=eng.proc, what="commit of 12")
    assert eng.stop() == 0


def test_an_oversized_message_is_fatal_with_a_clear_reason_and_the_rest_arrive(kafka, engines):
    sns, sqs = client("sns"), client("sqs")
    name = unique("sns-big")
    arn = make_topic(sns, name)
    q = Queue(sqs, make_queue(sns, sqs, arn, name, raw=True))
    topic = unique("sns-big")
    dlq = topic + ".dlq"
    create_topic(kafka, topic, 1)
    create_topic(kafka, dlq, 1)
    recs = list(events(6))
    big = json.loads(recs[3][1])
    big["pad"] = "x" * (300 * 1024)
    recs[3] = (recs[3][0], json.dumps(big).encode())
    produce(kafka, topic, recs)
    eng = start(engines, kafka, {"p": pipeline(
        "sns-big", topic, sink(arn), batch={"max_records": 200, "linger_ms": 20,
                                            "max_bytes": 4 * 1024 * 1024},
        errors={"tolerance": "all", "dead_letter_topic": dlq})}, aws_env())
    got = dlq_records(kafka, dlq, expect=1)
    assert len(got) == 1
    msg = got[0][2]["connectd.error.message"]
    assert msg.startswith("message too large: ") and "262144" in msg, msg
    q.wait(5, proc=eng.proc)
    assert sorted(json.loads(m["Body"])["eventId"] for m in q.msgs) == [
        f"e-{i:05d}" for i in range(6) if i != 3]
    assert eng.stop() == 0


def test_throttling_is_retried_and_requests_carry_a_sigv4_signature(kafka, engines):
    resp = SnsThrottleResponder(throttle=4)
    try:
        topic = unique("sns-throttle")
        create_topic(kafka, topic, 1)
        produce(kafka, topic, events(50))
        arn = f"arn:aws:sns:{REGION}:123456789012:alerts"
        eng = start(engines, kafka, {"p": pipeline(
            "sns-throttle", topic, sink(arn, message="${/eventId}", dedupe_window="off"),
            batch={"max_records": 20, "linger_ms": 50})}, aws_env(endpoint=resp.url))
        wait_until(lambda: committed_offsets(kafka, "connectd.sns-throttle", topic) == {0: 50},
                   proc=eng.proc, what="commit of 50")
        assert resp.bad == [], resp.bad
        assert resp.throttled == 4
        assert "PublishBatch" in resp.actions
        got = sorted(p["Message"] for p in resp.published)
        assert set(got) == {f"e-{i:05d}" for i in range(50)}
        assert metric(eng, "sns_retries_total") >= 4
        assert eng.stop() == 0
    finally:
        resp.close()


def test_sigkill_before_commit_redelivers_and_redis_keeps_each_notification_once(kafka, engines):
    sns, sqs = client("sns"), client("sqs")
    name = unique("sns-kill")
    arn = make_topic(sns, name)
    q = Queue(sqs, make_queue(sns, sqs, arn, name, raw=True))
    topic = unique("sns-kill")
    create_topic(kafka, topic, 2)
    produce(kafka, topic, events(80))
    pipes = {"p": pipeline("sns-kill", topic, sink(arn, message="${/eventId}",
                                                   dedupe_prefix=unique("sns-kill") + ":"))}
    # Commits only every 10 minutes: the kill comes before any commit.
    eng = start(engines, kafka, pipes, aws_env(), commit_interval_ms=600000)
    q.wait(80, proc=eng.proc, settle=0.5)
    assert all(v < 0 for v in committed_offsets(kafka, "connectd.sns-kill", topic).values())
    eng.proc.send_signal(signal.SIGKILL)
    eng.proc.wait()
    eng.log.close()
    eng.start()  # the same group, nothing committed: all 80 come again
    wait_until(lambda: metric(eng, "sns_duplicates_suppressed_total") >= 80, proc=eng.proc,
               what="80 duplicates suppressed")
    assert eng.stop() == 0
    assert sum(committed_offsets(kafka, "connectd.sns-kill", topic).values()) == 80
    q.drain()
    bodies = sorted(m["Body"] for m in q.msgs)
    assert bodies == [f"e-{i:05d}" for i in range(80)], len(bodies)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    def __init__(self):
        self.port = free_port()
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(["/usr/bin/redis-server", "--port", str(self.port),
                                      "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("private redis-server did not start")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"


def test_redis_dying_mid_run_retries_or_publishes_and_loses_nothing(kafka, engines):
    sns, sqs = client("sns"), client("sqs")
    name = unique("sns-redis")
    arn_r, arn_p = make_topic(sns, name + "-r"), make_topic(sns, name + "-p")
    q_r = Queue(sqs, make_queue(sns, sqs, arn_r, name + "-r", raw=True))
    q_p = Queue(sqs, make_queue(sns, sqs, arn_p, name + "-p", raw=True))
    topic = unique("sns-redis")
    create_topic(kafka, topic, 2)
    redis = PrivateRedis()
    try:
        sinks = [sink(arn_r, name="retry", message="${/eventId}", on_redis_error="retry"),
                 sink(arn_p, name="publish", message="${/eventId}", on_redis_error="publish")]
        eng = start(engines, kafka, {"p": pipeline("sns-redis", topic, sinks)}, aws_env(),
                    redis=redis.url)
        produce(kafka, topic, events(30))
        q_r.wait(30, proc=eng.proc, settle=0.2)
        q_p.wait(30, proc=eng.proc, settle=0.2)

        redis.kill()
        produce(kafka, topic, events(30, start=30))
        # publish mode goes on without Redis; retry mode waits for it.
        q_p.wait(60, proc=eng.proc, settle=0.2)
        time.sleep(2)
        assert len(q_r.drain()) == 30
        assert eng.proc.poll() is None
        assert "redis EXISTS failed" in eng.logs()

        redis.start()
        q_r.wait(60, proc=eng.proc, timeout=120)
        wait_until(lambda: sum(committed_offsets(kafka, "connectd.sns-redis", topic).values())
                   == 60, proc=eng.proc, what="commit of 60")
        assert eng.stop() == 0
    finally:
        redis.kill()
    q_r.drain()
    q_p.drain()
    want = [f"e-{i:05d}" for i in range(60)]
    # retry: exactly once each; publish: each at least once (no dedupe while down).
    assert sorted(m["Body"] for m in q_r.msgs) == want
    assert sorted(set(m["Body"] for m in q_p.msgs)) == want


def test_dedupe_on_without_redis_url_does_not_start_and_says_why(kafka, engines):
    topic = unique("sns-noredis")
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]},
                  {"p": pipeline("sns-noredis", topic,
                                 sink(f"arn:aws:sns:{REGION}:123456789012:t"))},
                  env=aws_env()).start()
    rc = eng.proc.wait(timeout=30)
    logs = eng.logs()
    assert rc != 0, logs[-2000:]
    assert "redis_url" in logs and "dedupe_window" in logs, logs[-2000:]


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
    sns, sqs = client("sns", moto_auth), client("sqs", moto_auth)
    iam = client("iam", moto_auth)
    name = unique("sns-auth")
    arn = make_topic(sns, name)                                               # 1
    qurl = make_queue(sns, sqs, arn, name, raw=True)                          # 2, 3, 4
    iam.create_user(UserName="publisher")                                     # 5
    pk = iam.create_access_key(UserName="publisher")["AccessKey"]             # 6
    iam.put_user_policy(UserName="publisher", PolicyName="pub", PolicyDocument=json.dumps({  # 7
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow",
                       # AWS authorizes PublishBatch as sns:Publish; moto 5.2.5 asks
                       # for sns:PublishBatch.
                       "Action": ["sns:Publish", "sns:PublishBatch", "sqs:ReceiveMessage",
                                  "sqs:DeleteMessage", "sqs:DeleteMessageBatch"],
                       "Resource": "*"}]}))
    # Auth is on now: the root's dummy keys are refused.
    with pytest.raises(Exception):
        client("sns", moto_auth).publish(TopicArn=arn, Message="x")
    q = Queue(client("sqs", moto_auth, pk["AccessKeyId"], pk["SecretAccessKey"]), qurl)

    topic = unique("sns-auth")
    create_topic(kafka, topic, 1)
    produce(kafka, topic, events(20))
    s = sink(arn, message="${/eventId}", dedupe_window="off")
    eng = start(engines, kafka, {"p": pipeline("sns-auth", topic, s)},
                aws_env(moto_auth, pk["AccessKeyId"], pk["SecretAccessKey"]))
    wait_until(lambda: committed_offsets(kafka, "connectd.sns-auth", topic) == {0: 20},
               proc=eng.proc, what="commit of 20")
    q.wait(20, proc=eng.proc)
    assert sorted(m["Body"] for m in q.msgs) == [f"e-{i:05d}" for i in range(20)]
    assert eng.stop() == 0

    # The same user with a wrong secret: refused (FATAL), dead-lettered.
    topic2 = unique("sns-auth-bad")
    dlq = topic2 + ".dlq"
    create_topic(kafka, topic2, 1)
    create_topic(kafka, dlq, 1)
    produce(kafka, topic2, events(5, start=100))
    eng2 = start(engines, kafka, {"p": pipeline(
        "sns-auth-bad", topic2, s, errors={"tolerance": "all", "dead_letter_topic": dlq})},
        aws_env(moto_auth, pk["AccessKeyId"], "wrong-secret"))
    got = dlq_records(kafka, dlq, expect=5)
    assert len(got) == 5, got
    msg = got[0][2]["connectd.error.message"]
    assert msg.startswith("SignatureDoesNotMatch: "), msg
    assert eng2.stop() == 0
    assert q.drain() and len(q.msgs) == 20


def test_validate_reports_bad_sns_options_with_file_and_path(tmp_path):
    from conftest import CONNECTD
    (tmp_path / "connectd.json").write_text(json.dumps(
        {"kafka": {"bootstrap.servers": "127.0.0.1:1"}, "pipelines_dir": "."}))
    cases = [
        ({"topic_arn": "alerts"}, "sinks[0]: topic_arn: \"alerts\" is not an SNS topic ARN"),
        ({"topic_arn": "arn:aws:sns:eu-west-1:1:t",
          "message_attributes": {"k": {"type": "Int", "value": "${/x}"}}},
         "sinks[0]: message_attributes.k.type: must be String, Number, Binary or String.Array"),
        ({"topic_arn": "arn:aws:sns:eu-west-1:1:t", "subject": "${nope}"}, "sinks[0]: subject: "),
        ({"topic_arn": "arn:aws:sns:eu-west-1:1:t", "dedupe_window": "soon"},
         "sinks[0]: dedupe_window: "),
        ({"subject": "x"}, "sinks[0].topic_arn: "),
    ]
    for opts, want in cases:
        (tmp_path / "p.json").write_text(json.dumps(
            {"name": "p", "topics": ["t"], "sinks": [dict({"plugin": "sns"}, **opts)]}))
        p = subprocess.run([str(CONNECTD), "validate", "-c", str(tmp_path / "connectd.json")],
                           capture_output=True, text=True, timeout=30)
        out = p.stdout + p.stderr
        assert p.returncode != 0, out
        assert "p.json: " + want in out, (want, out)
    (tmp_path / "p.json").write_text(json.dumps(
        {"name": "p", "topics": ["t"], "sinks": [{"plugin": "sns", "topic_arn":
                                                  "arn:aws:sns:eu-west-1:1:t.fifo"}]}))
    p = subprocess.run([str(CONNECTD), "validate", "-c", str(tmp_path / "connectd.json")],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
