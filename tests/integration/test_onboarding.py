"""The onboarding platform end to end: the repository's own pipeline files
(pipelines/*.json) run against Apache Kafka, moto (DynamoDB, SNS, SQS) and
redis-server.  A customer journey goes in through source-http; every
DynamoDB table is checked item by item, every SNS delivery through SQS queues
subscribed to the topics, every WebSocket push through `ws` clients; a replay
of the whole journey changes no table and sends no second notification; the
failing customer's error reaches audit-logs, the support alert and that
customer's socket only.  Headless Chromium opens the journey page (/demo on
the WebSocket server) and watches its tiles turn complete."""
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import ROOT, create_topic, unique
from test_sink_websocket import WsClient

sys.path.insert(0, str(ROOT / "scripts"))
import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location("onboarding_aws",
                                               ROOT / "scripts" / "onboarding-aws.py")
onboarding_aws = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(onboarding_aws)

TOPICS = ["user-info-submitted", "documents-processed", "kyc-verified", "policy-recommended",
          "workflow-completed", "workflow-errors"]
SECRET = "e2e-websocket-secret-of-at-least-32-bytes"
MOTO = os.environ.get("MOTO_ENDPOINT")
REDIS_URL = os.environ.get("REDIS_URL")


def jwt_for(sub):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "jwt-issue"), sub,
                           "--secret", SECRET], check=True, capture_output=True,
                          text=True).stdout.strip()


def repo_pipelines(run_id):
    """Every pipeline file of the repository, with consumer groups of this
    run (the topics are the platform's own, shared with the demo)."""
    out = {}
    for p in sorted((ROOT / "pipelines").glob("*.json")):
        if p.name.startswith("connectd"):
            continue
        body = json.loads(p.read_text())
        if "topics" in body:
            body["group_id"] = f"e2e-{run_id}-{body['name']}"
        out[p.stem] = body
    return out


class Platform:
    """One engine with the repository's pipelines, plus the AWS resources."""

    def __init__(self, kafka, engines, tmp_path):
        assert MOTO and REDIS_URL, "moto.env and redis.env must be loaded"
        self.run_id = uuid.uuid4().hex[:8]
        self.prefix = f"e2e-{self.run_id}-"
        self.aws_env = onboarding_aws.create(MOTO, self.prefix)
        for t in TOPICS:
            create_topic(kafka, t, 3)
            create_topic(kafka, f"{t}.dlq", 1)
        for t in ("kafka-events.dlq", "events-archive.dlq"):
            create_topic(kafka, t, 1)
        env = dict(self.aws_env, SOURCE_HTTP_LISTEN="127.0.0.1:0",
                   WEBSOCKET_LISTEN="127.0.0.1:0", WEBSOCKET_JWT_SECRET=SECRET,
                   CONNECTD_SCHEMAS_DIR=str(ROOT / "pipelines" / "schemas"),
                   CONNECTD_OUT_DIR=str(tmp_path / "out"))
        self.eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]},
                           repo_pipelines(self.run_id),
                           engine_extra={"redis_url": REDIS_URL}, env=env).start()
        self.http = "http://" + self._logged(r"\[ingest[^\]]*\] .*listening on (127\.0\.0\.1:\d+)")
        self.ws = self._logged(r"websocket server listening on (127\.0\.0\.1:\d+)")
        self.admin = self.eng.admin_url()
        self.wait_ready()

    def _logged(self, pattern, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.findall(pattern, self.eng.logs())
            if m:
                return m[-1]
            if self.eng.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"/{pattern}/ not logged:\n{self.eng.logs()[-4000:]}")

    def pipelines(self):
        with urllib.request.urlopen(self.admin + "/pipelines", timeout=10) as r:
            return {p["name"]: p for p in json.load(r)}

    def wait_ready(self, timeout=90):
        """Every pipeline RUNNING, and every sink pipeline has partitions."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            ps = self.pipelines()
            if all(p["state"] == "RUNNING" for p in ps.values()) and \
               self.eng.logs().count("assigned") >= 8:
                return ps
            time.sleep(0.2)
        raise AssertionError(f"not ready: {json.dumps(self.pipelines())[:3000]}")

    def post(self, topic, event):
        req = urllib.request.Request(f"{self.http}/v1/events/{topic}", method="POST",
                                     data=json.dumps(event).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status in (200, 201, 202), r.status
            return json.load(r)

    def drained(self, timeout=90):
        """Waits until no sink pipeline has lag or records in flight."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            ps = self.pipelines()
            # lag is null until the broker reported a high watermark.
            busy = [n for n, p in ps.items() if p.get("kind") == "sink" and
                    (p.get("lag") is None or p["lag"] > 0 or p.get("inflight_records", 0) > 0)]
            if not busy:
                return
            time.sleep(0.3)
        raise AssertionError(f"pipelines still busy: {busy}")

    def state(self):
        return onboarding_aws.dump(MOTO, self.prefix)

    def ws_connections(self):
        """Sockets open on the shared WebSocket server (one gauge per sink
        sharing it: the largest)."""
        with urllib.request.urlopen(self.admin + "/metrics", timeout=10) as r:
            text = r.read().decode()
        vals = [float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                if l.startswith("sink_websocket_connections{")]
        return max(vals or [0])


def journey(cust_a, cust_b, ts0):
    """(topic, event) pairs: A completes, B fails at KYC."""
    def ev(topic, cust, app, n, data):
        return topic, {"eventId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{cust}/{topic}/{n}")),
                       "customerId": cust, "applicationId": app,
                       "timestamp": f"{ts0}.{n:03d}Z", "data": data}
    a, b = f"app-{cust_a}", f"app-{cust_b}"
    return [
        ev("user-info-submitted", cust_a, a, 1, {"firstName": "Ada", "lastName": "Byron",
                                                  "email": "ada@example.com"}),
        ev("documents-processed", cust_a, a, 2, {"status": "EXTRACTED", "documentType": "passport",
                                                  "confidence": 0.98}),
        ev("kyc-verified", cust_a, a, 3, {"status": "VERIFIED", "riskLevel": "LOW", "score": 0.07}),
        ev("policy-recommended", cust_a, a, 4, {"recommendations": [
            {"policyId": "term-life-20", "premium": 32.5}]}),
        ev("workflow-completed", cust_a, a, 5, {"policyId": "term-life-20", "status": "COMPLETED"}),
        ev("user-info-submitted", cust_b, b, 6, {"firstName": "Alan", "lastName": "Turing",
                                                  "email": "alan@example.com"}),
        ev("documents-processed", cust_b, b, 7, {"status": "LOW_CONFIDENCE",
                                                  "documentType": "license", "confidence": 0.41}),
        ev("kyc-verified", cust_b, b, 8, {"status": "PENDING_REVIEW", "riskLevel": "HIGH"}),
        ev("workflow-errors", cust_b, b, 9, {"stage": "kyc", "error": "identity document unreadable",
                                              "code": "KYC_DOC_UNREADABLE", "retryable": False}),
    ]


def S(item, key):
    v = item.get(key)
    assert v is not None, f"{key} missing in {item}"
    return v.get("S", v.get("N", v.get("BOOL")))


def ours(items, custs):
    return [i for i in items if i.get("customerId", {}).get("S") in custs]


@pytest.fixture
def platform(kafka, engines, tmp_path):
    return Platform(kafka, engines, tmp_path)


def test_the_journey_lands_everywhere_once_and_a_replay_changes_nothing(platform):
    p = platform
    ca, cb = unique("cust-a"), unique("cust-b")
    ws_a = [WsClient(f"ws://{p.ws}/ws?token={jwt_for(ca)}") for _ in range(2)]
    ws_b = WsClient(f"ws://{p.ws}/ws?token={jwt_for(cb)}")
    for c in ws_a + [ws_b]:
        c.hello()
    ts0 = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    steps = journey(ca, cb, ts0)
    ids = {}
    for topic, e in steps:
        p.post(topic, e)
        ids[(e["customerId"], topic)] = e["eventId"]
    p.drained()

    # ---------------------------------------------------------- WebSocket
    want_a = ["USER_INFO_SUBMITTED", "DOCUMENTS_PROCESSED", "KYC_VERIFIED",
              "POLICY_RECOMMENDED", "WORKFLOW_COMPLETED"]
    want_b = ["USER_INFO_SUBMITTED", "DOCUMENTS_PROCESSED", "KYC_VERIFIED", "WORKFLOW_ERROR"]
    for c, want, cust in [(ws_a[0], want_a, ca), (ws_a[1], want_a, ca), (ws_b, want_b, cb)]:
        pushes = c.wait_pushes(len(want))
        time.sleep(0.5)
        pushes = c.pushes()
        assert sorted(m["type"] for m in pushes) == sorted(want), pushes
        seqs = [m["seq"] for m in pushes]
        assert seqs == list(range(seqs[0], seqs[0] + len(want))), seqs
        # Each message carries its own customer's event, nobody else's.
        assert {m["eventId"] for m in pushes} == \
            {ids[(cust, t)] for t in TOPICS if (cust, t) in ids}
    err = [m for m in ws_b.pushes() if m["type"] == "WORKFLOW_ERROR"][0]
    assert err["data"]["error"] == "identity document unreadable"

    # ------------------------------------------------------------ DynamoDB
    st = p.state()
    t = st["tables"]
    users = {S(i, "customerId"): i for i in ours(t["users"], {ca, cb})}
    assert set(users) == {ca, cb}
    assert S(users[ca], "firstName") == "Ada" and S(users[ca], "email") == "ada@example.com"
    assert S(users[ca], "status") == "INFO_SUBMITTED"
    assert S(users[cb], "lastName") == "Turing"
    apps = {S(i, "applicationId"): i for i in ours(t["applications"], {ca, cb})}
    assert S(apps[f"app-{ca}"], "status") == "COMPLETED"
    assert S(apps[f"app-{ca}"], "archived") is True
    assert S(apps[f"app-{ca}"], "policyId") == "term-life-20"
    assert S(apps[f"app-{cb}"], "status") == "DOCUMENTS_PROCESSED"
    assert S(apps[f"app-{cb}"], "documentStatus") == "LOW_CONFIDENCE"
    ai = {S(i, "eventId"): i for i in ours(t["ai-results"], {ca, cb})}
    assert set(ai) == {ids[(ca, "documents-processed")], ids[(cb, "documents-processed")]}
    assert S(ai[ids[(ca, "documents-processed")]], "documentType") == "passport"
    kyc = {S(i, "applicationId"): i for i in ours(t["kyc-results"], {ca, cb})}
    assert (S(kyc[f"app-{ca}"], "status"), S(kyc[f"app-{ca}"], "riskLevel")) == ("VERIFIED", "LOW")
    assert (S(kyc[f"app-{cb}"], "status"), S(kyc[f"app-{cb}"], "riskLevel")) == \
        ("PENDING_REVIEW", "HIGH")
    pol = ours(t["policy-recommendations"], {ca, cb})
    assert len(pol) == 1 and S(pol[0], "customerId") == ca
    assert pol[0]["recommendations"]["L"][0]["M"]["policyId"]["S"] == "term-life-20"
    assert int(S(pol[0], "expiresAt")) > time.time() + 6 * 86400
    audit = ours(t["audit-logs"], {ca, cb})
    assert [S(i, "eventId") for i in audit] == [ids[(cb, "workflow-errors")]]
    assert S(audit[0], "error") == "identity document unreadable"
    trail = {S(i, "eventId"): i for i in ours(t["kafka-events"], {ca, cb})}
    assert set(trail) == set(ids.values())
    for (cust, topic), eid in ids.items():
        item = trail[eid]
        assert S(item, "topic") == topic
        assert int(S(item, "offset")) >= 0 and int(S(item, "partition")) in (0, 1, 2)
        assert item["payload"]["M"]["customerId"]["S"] == cust

    # ----------------------------------------------------------------- SNS
    q = st["queues"]
    def mine(msgs):
        return [m for m in msgs if m.get("MessageAttributes", {}).get("customerId", {})
                .get("Value") in (ca, cb)]
    kyc_alerts, emails, support = (mine(q["kyc-compliance-alerts"]),
                                   mine(q["customer-notifications"]), mine(q["support-alerts"]))
    assert len(kyc_alerts) == 1, kyc_alerts
    assert kyc_alerts[0]["Subject"] == f"KYC PENDING_REVIEW (risk HIGH) for customer {cb}"
    body = json.loads(kyc_alerts[0]["Message"])
    assert body["riskLevel"] == "HIGH" and body["customerId"] == cb
    assert kyc_alerts[0]["MessageAttributes"]["riskLevel"]["Value"] == "HIGH"
    assert len(emails) == 1 and json.loads(emails[0]["Message"])["customerId"] == ca
    assert emails[0]["Subject"] == "Your insurance policy term-life-20 is ready"
    assert len(support) == 1
    assert json.loads(support[0]["Message"])["error"] == "identity document unreadable"
    assert cb in support[0]["Subject"]

    # ------------------------------------------------------------- replay
    before = {name: sorted(json.dumps(i, sort_keys=True) for i in ours(items, {ca, cb}))
              for name, items in t.items()}
    for topic, e in steps:
        p.post(topic, e)
    p.drained()
    time.sleep(1.0)
    st2 = p.state()
    after = {name: sorted(json.dumps(i, sort_keys=True) for i in ours(items, {ca, cb}))
             for name, items in st2["tables"].items()}
    assert after == before, "a replay changed a table"
    for name, msgs in st2["queues"].items():
        assert mine(msgs) == [], f"a replay sent a second notification on {name}: {mine(msgs)}"
    for c in ws_a + [ws_b]:
        c.stop()
    assert p.eng.stop() == 0


def test_the_journey_page_turns_its_tiles_in_the_browser(platform):
    from browser import missing, run_page
    assert missing() is None, missing()
    p = platform
    cust = unique("cust-page")
    token = jwt_for(cust)
    ts0 = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    steps = [s for s in journey(cust, unique("cust-other"), ts0)][:5]
    result = {}

    def browse():
        tiles = ["#tile-info", "#tile-documents", "#tile-kyc", "#tile-policy",
                 "#tile-completion"]
        page_steps = [{"wait_for": "#tile-info"},
                      {"wait_for_function": "() => document.getElementById('conn').dataset.conn "
                                            "=== 'open'"},
                      {"screenshot": "journey-start.png"}]
        for i, sel in enumerate(tiles):
            page_steps.append({"wait_for_function":
                               f"() => document.querySelector('{sel}').dataset.state "
                               f"=== 'complete'"})
            page_steps.append({"sleep_ms": 400})  # the tile's colour transition
            page_steps.append({"screenshot": f"journey-step{i + 1}.png"})
        page_steps.append({"eval": "() => [...document.querySelectorAll('.tile')]"
                                   ".map(t => t.dataset.state)", "as": "states"})
        page_steps.append({"text": "#customer", "as": "customer"})
        result.update(run_page(f"http://{p.ws}/demo#token={token}", page_steps,
                               timeout_ms=30000))

    th = threading.Thread(target=browse)
    th.start()
    # The page connects first (the sink's connection gauge says so), then
    # the journey plays out.
    deadline = time.time() + 60
    while time.time() < deadline and th.is_alive() and p.ws_connections() < 1:
        time.sleep(0.1)
    assert p.ws_connections() >= 1, "the journey page never connected"
    time.sleep(0.5)
    for topic, e in steps:
        p.post(topic, e)
        time.sleep(0.4)
    th.join(timeout=120)
    assert result.get("ok"), result
    assert result["results"]["states"] == ["complete"] * 5
    assert result["results"]["customer"] == cust

    # The failing customer's page: replayed from the start (since=0), it
    # shows the error; the happy customer's events never reach it.
    other = unique("cust-fail")
    for topic, e in journey(cust, other, ts0)[5:]:
        p.post(topic, e)
    failing = run_page(f"http://{p.ws}/demo#token={jwt_for(other)}", [
        {"wait_for": '#error[data-shown="true"]'},
        {"wait_for": '#tile-kyc[data-state="error"]'},
        {"sleep_ms": 400},
        {"screenshot": "journey-failing.png"},
        {"eval": "() => [...document.querySelectorAll('.tile')].map(t => t.dataset.state)",
         "as": "states"},
        {"text": "#error", "as": "error"},
        {"eval": "() => [...document.querySelectorAll('#events li')].map(li => li.dataset.type)",
         "as": "types"}], timeout_ms=30000)
    r = failing["results"]
    assert r["states"] == ["complete", "complete", "error", "pending", "pending"], r
    assert "identity document unreadable" in r["error"]
    assert sorted(r["types"]) == sorted(["USER_INFO_SUBMITTED", "DOCUMENTS_PROCESSED",
                                         "KYC_VERIFIED", "WORKFLOW_ERROR"]), r["types"]
    assert p.eng.stop() == 0


def test_the_dashboard_shows_the_onboarding_pipelines_running(platform):
    from browser import missing, run_page
    assert missing() is None, missing()
    p = platform
    names = TOPICS + ["kafka-events", "events-archive", "ingest"]
    steps = [{"wait_for": f'#rows tr[data-pipeline="{n}"] .state[data-state="RUNNING"]'}
             for n in names]
    steps += [{"sleep_ms": 1200},
              {"screenshot": "dashboard-onboarding.png", "full_page": True},
              {"screenshot": "dashboard-onboarding-top.png", "full_page": False},
              {"eval": "() => [...document.querySelectorAll('#rows tr[data-pipeline]')]"
                       ".map(tr => tr.dataset.pipeline)", "as": "rows"}]
    result = run_page(p.admin + "/", steps, timeout_ms=30000)
    assert set(names) <= set(result["results"]["rows"]), result["results"]["rows"]
    assert p.eng.stop() == 0
