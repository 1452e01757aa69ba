"""The admin dashboard (GET / on the admin port): the page is served from the
binary, and in headless Chromium it shows every pipeline live and pauses and
resumes one through the admin API."""
import json
import threading
import time
import urllib.error
import urllib.request

from browser import ARTIFACTS, ROOT, run_page
from conftest import create_topic, produce, unique, wait_for_lines


def get(url, method="GET", headers=None):
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def records(n, start=0):
    return [(f"c{i % 7}", b'{"customerId":"c%d","n":%d}' % (i % 7, i))
            for i in range(start, start + n)]


def three_pipelines(kafka, engines, tmp_path):
    """An engine with three sink-file pipelines, each topic already holding
    a different number of records, all of them written out."""
    counts = {"orders": 40, "kyc": 25, "audit": 12}
    pipelines, outs, names, topics = {}, {}, {}, {}
    for short, n in counts.items():
        topic = unique(f"dash-{short}")
        create_topic(kafka, topic, 2)
        produce(kafka, topic, records(n))
        name = unique(f"dash-{short}")
        out = tmp_path / f"{short}.ndjson"
        pipelines[short] = {"name": name, "topics": [topic],
                            "sinks": [{"plugin": "file", "name": f"{short}-archive",
                                       "path": str(out)}]}
        outs[short], names[short], topics[short] = out, name, topic
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]}, pipelines).start()
    for short, n in counts.items():
        assert wait_for_lines(outs[short], n, proc=eng.proc) == n, eng.logs()[-3000:]
    return eng, counts, names, topics, outs


def row(name):
    return f'tr[data-pipeline="{name}"]'


def test_get_root_is_the_self_contained_dashboard_page(kafka, engines, tmp_path):
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]}, {}).start()
    base = eng.admin_url()
    status, headers, body = get(base + "/")
    assert status == 200
    assert headers.get("Content-Type") == "text/html; charset=utf-8"
    assert headers.get("Cache-Control") == "no-store"
    csp = headers.get("Content-Security-Policy")
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp, csp
    html = body.decode()
    assert html.startswith("<!DOCTYPE html>") and "<title>connectd</title>" in html
    # Everything inline: no script, style, font or image is fetched from anywhere.
    assert "<script src" not in html and "<link" not in html and "@import" not in html
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    # The page is the one in the source tree, byte for byte.
    assert body == (ROOT / "engine" / "admin_dashboard.html").read_bytes()

    status, headers, _ = get(base + "/", "HEAD")
    assert status == 200 and headers.get("Content-Type") == "text/html; charset=utf-8"
    status, headers, body = get(base + "/", "POST")
    assert status == 405 and headers.get("Content-Type") == "application/json"
    assert json.loads(body) == {"error": "use GET"}
    assert eng.stop() == 0


def test_a_post_from_another_origin_is_refused(kafka, engines, tmp_path):
    topic = unique("dash-csrf")
    create_topic(kafka, topic, 1)
    name = unique("dash-csrf")
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]}, {
        "p": {"name": name, "topics": [topic],
              "sinks": [{"plugin": "file", "path": str(tmp_path / "out.ndjson")}]}}).start()
    base = eng.admin_url()
    eng.wait_log("consuming 1 topic(s)")
    host = base[len("http://"):]
    # What a browser sends when some other site's page posts to the admin port.
    for origin in ("http://evil.example", "null", f"http://{host}.evil.example",
                   "https://127.0.0.1:1"):
        status, _, body = get(base + f"/pipelines/{name}/pause", "POST", {"Origin": origin})
        assert status == 403, origin
        assert json.loads(body) == {"error": "cross-origin request refused"}
    assert json.loads(get(base + f"/pipelines/{name}")[2])["state"] == "RUNNING"
    # The dashboard's own origin, and clients that send none, may.
    status, _, body = get(base + f"/pipelines/{name}/pause", "POST", {"Origin": base})
    assert status == 200 and json.loads(body)["state"] == "PAUSED"
    status, _, body = get(base + f"/pipelines/{name}/resume", "POST")
    assert status == 200 and json.loads(body)["state"] == "RUNNING"
    assert eng.stop() == 0


def test_pipelines_json_carries_total_lag_and_plugin_metrics(kafka, engines, tmp_path):
    eng, counts, names, _, _ = three_pipelines(kafka, engines, tmp_path)
    base = eng.admin_url()
    deadline = time.time() + 20
    while True:  # lag reaches 0 once a commit interval has passed
        status, _, body = get(base + "/pipelines")
        assert status == 200
        listed = {p["name"]: p for p in json.loads(body)}
        if all(listed[n]["lag"] == 0 for n in names.values()) or time.time() > deadline:
            break
        time.sleep(0.2)
    for short, n in counts.items():
        p = listed[names[short]]
        assert p["records_in"] == n and p["dead_lettered"] == 0
        assert p["lag"] == sum(part["lag"] for part in p["partitions"]) == 0
        assert p["metrics"] == {}
        (sink,) = p["sinks"]
        assert sink["name"] == f"{short}-archive" and sink["records_out"] == n
        # sink-file's own counters, under the sink they belong to.
        assert sink["metrics"]["sink_file_bytes_written_total"] > 0, sink
    status, _, body = get(base + f"/pipelines/{names['kyc']}")
    assert status == 200 and json.loads(body)["sinks"][0]["metrics"] == \
        listed[names["kyc"]]["sinks"][0]["metrics"]
    assert eng.stop() == 0


def test_dashboard_shows_pipelines_live_and_pauses_and_resumes_one(kafka, engines, tmp_path):
    eng, counts, names, topics, outs = three_pipelines(kafka, engines, tmp_path)
    base = eng.admin_url()

    # Records keep arriving on "orders" while the page is open, so its
    # records/s reading has something to show.
    stop = threading.Event()
    produced = {"n": 0}

    def trickle():
        while not stop.is_set() and produced["n"] < 400:
            produce(kafka, topics["orders"], records(20, counts["orders"] + produced["n"]))
            produced["n"] += 20
            stop.wait(0.3)

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        running = [{"wait_for": f'{row(n)} .state[data-state="RUNNING"]'} for n in names.values()]
        result = run_page(base + "/", running + [
            # Every pipeline's records-in shows at least what its topic held.
            {"wait_for_function": """(want) => Object.entries(want).every(([name, n]) => {
                 const c = document.querySelector(`tr[data-pipeline="${name}"] .records-in`);
                 return c && Number(c.dataset.value) >= n; })""",
             "arg": {names[s]: n for s, n in counts.items()}},
            {"wait_for_function": """(name) => {
                 const c = document.querySelector(`tr[data-pipeline="${name}"] .rate`);
                 return c && parseFloat(c.textContent.replace(/,/g, '')) > 0; }""",
             "arg": names["orders"]},
            {"eval": """() => [...document.querySelectorAll('#rows tr')].map(tr => ({
                 name: tr.dataset.pipeline,
                 state: tr.querySelector('.state').dataset.state,
                 records: Number(tr.querySelector('.records-in').dataset.value),
                 rate: tr.querySelector('.rate').textContent,
                 lag: tr.querySelector('.lag').textContent,
                 dlq: tr.querySelector('.dead-lettered').textContent,
                 sinks: [...tr.querySelectorAll('.sinks > li')].map(li => ({
                     name: li.dataset.sink,
                     status: li.querySelector('.sink-status').textContent,
                     counts: li.querySelector('.counts').textContent})),
                 button: tr.querySelector('button').textContent}))""", "as": "rows"},
            {"text": "#sum-running", "as": "sum_running"},
            {"screenshot": "dashboard-running.png"},
            {"click": f"{row(names['kyc'])} button.pause"},
            {"wait_for": f'{row(names["kyc"])} .state[data-state="PAUSED"]'},
            {"wait_for": f'{row(names["kyc"])} button.resume:not([disabled])'},
            # The next refresh still says PAUSED: the engine holds it, not the page.
            {"wait_for_function": """() => {
                 const polls = Number(document.body.dataset.polls);
                 window.pollsAtPause = window.pollsAtPause || polls;
                 return polls >= window.pollsAtPause + 2; }"""},
            {"text": f'{row(names["kyc"])} .state', "as": "kyc_state"},
            {"text": "#sum-paused", "as": "sum_paused"},
            {"screenshot": "dashboard-paused.png"},
        ])
    finally:
        stop.set()
        t.join(timeout=60)

    rows = {r["name"]: r for r in result["results"]["rows"]}
    api_order = [p["name"] for p in json.loads(get(base + "/pipelines")[2])]
    assert list(rows) == api_order and set(api_order) == set(names.values())
    for short, n in counts.items():
        r = rows[names[short]]
        assert r["state"] == "RUNNING" and r["button"] == "Pause", r
        assert r["records"] >= n > 0, r
        assert r["dlq"] == "0", r
        (sink,) = r["sinks"]
        assert sink["name"] == f"{short}-archive" and sink["status"] == "ok", r
        assert sink["counts"].startswith("out "), r
    assert float(rows[names["orders"]]["rate"].replace(",", "")) > 0
    assert result["results"]["sum_running"] == "3"
    assert result["results"]["kyc_state"] == "PAUSED"
    assert result["results"]["sum_paused"] == "1"
    assert result["page_errors"] == [] and result["failed_requests"] == []
    # The page asked only its own origin for anything.
    assert result["requests"] and all(u.startswith(base + "/") for u in result["requests"]), \
        result["requests"]
    shots = [ARTIFACTS / "dashboard-running.png", ARTIFACTS / "dashboard-paused.png"]
    assert [str(s) for s in shots] == result["screenshots"]
    assert all(s.stat().st_size > 10000 for s in shots)

    # The engine agrees: kyc is paused, the others run.
    for short, name in names.items():
        status, _, body = get(base + f"/pipelines/{name}")
        assert status == 200
        assert json.loads(body)["state"] == ("PAUSED" if short == "kyc" else "RUNNING")
    assert "state RUNNING -> PAUSED" in eng.logs()

    # A paused pipeline leaves new records alone until Resume is clicked.
    produce(kafka, topics["kyc"], records(5, counts["kyc"]))
    time.sleep(1.5)
    assert wait_for_lines(outs["kyc"], counts["kyc"] + 1, timeout=0.1) == counts["kyc"]
    result = run_page(base + "/", [
        {"wait_for": f'{row(names["kyc"])} button.resume:not([disabled])'},
        {"click": f'{row(names["kyc"])} button.resume'},
        {"wait_for": f'{row(names["kyc"])} .state[data-state="RUNNING"]'},
        {"wait_for": f'{row(names["kyc"])} button.pause'},
    ])
    assert result["page_errors"] == []
    status, _, body = get(base + f"/pipelines/{names['kyc']}")
    assert json.loads(body)["state"] == "RUNNING"
    assert wait_for_lines(outs["kyc"], counts["kyc"] + 5, proc=eng.proc) == counts["kyc"] + 5
    assert wait_for_lines(outs["orders"], counts["orders"] + produced["n"],
                          proc=eng.proc) == counts["orders"] + produced["n"]
    assert eng.stop() == 0
    assert "state PAUSED -> RUNNING" in eng.logs()


def test_dashboard_shows_failed_pipelines_dead_letters_and_retrying_sinks(kafka, engines,
                                                                          tmp_path):
    topics = {k: unique(f"dash-{k}") for k in ("broken", "lossy", "stuck")}
    for t in topics.values():
        create_topic(kafka, t, 1)
    names = {k: unique(f"dash-{k}") for k in topics}
    blocked = tmp_path / "a-directory"  # sink-file cannot open it: RETRY, again and again
    blocked.mkdir()

    def pipeline(k, path, **extra):
        p = {"name": names[k], "topics": [topics[k]],
             "sinks": [{"plugin": "file", "name": f"{k}-out", "path": str(path)}]}
        p.update(extra)
        return p

    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]}, {
        # A value that is not JSON stops a pipeline without error tolerance ...
        "broken": pipeline("broken", tmp_path / "broken.ndjson"),
        # ... and is skipped (counted as dead-lettered) by one that tolerates it.
        "lossy": pipeline("lossy", tmp_path / "lossy.ndjson", errors={"tolerance": "all"}),
        "stuck": pipeline("stuck", blocked, retry={"initial_ms": 50, "max_ms": 200,
                                                   "max_attempts": 100000,
                                                   "max_elapsed_ms": 3600000}),
    }).start()
    base = eng.admin_url()
    eng.wait_log("consuming 1 topic(s)")
    produce(kafka, topics["broken"], [("c1", b"not json")])
    produce(kafka, topics["lossy"], [("c1", b"not json"), ("c2", b'{"ok":1}'),
                                     ("c3", b"{broken")])
    produce(kafka, topics["stuck"], [("c1", b'{"n":1}')])
    eng.wait_log("state RUNNING -> FAILED")

    result = run_page(base + "/", [
        {"wait_for": f'{row(names["broken"])} .state[data-state="FAILED"]'},
        {"wait_for": f'{row(names["broken"])} button.pause[disabled]'},
        {"wait_for_function": """(name) => document.querySelector(
             `tr[data-pipeline="${name}"] .dead-lettered`).textContent === '2'""",
         "arg": names["lossy"]},
        {"wait_for_function": """(name) => document.querySelector(
             `tr[data-pipeline="${name}"] .sink-status`).textContent === 'retrying'""",
         "arg": names["stuck"]},
        {"text": f'{row(names["broken"])} .reason', "as": "reason"},
        {"text": f'{row(names["broken"])} .sink-status', "as": "broken_sink"},
        {"text": f'{row(names["lossy"])} .sink-status', "as": "lossy_sink"},
        {"text": f'{row(names["lossy"])} .state', "as": "lossy_state"},
        {"text": "#sum-failed", "as": "sum_failed"},
        {"text": "#sum-dlq", "as": "sum_dlq"},
        {"screenshot": "dashboard-failures.png"},
    ])
    r = result["results"]
    status, _, body = get(base + f"/pipelines/{names['broken']}")
    described = json.loads(body)
    assert described["state"] == "FAILED"
    assert r["reason"] == described["reason"] and r["reason"], r
    assert r["broken_sink"] == "failed" and r["lossy_sink"] == "ok", r
    assert r["lossy_state"] == "RUNNING" and r["sum_failed"] == "1" and r["sum_dlq"] == "2", r
    assert result["page_errors"] == []
    # The engine's counters the page showed.
    assert json.loads(get(base + f"/pipelines/{names['lossy']}")[2])["dead_lettered"] == 2
    assert json.loads(get(base + f"/pipelines/{names['stuck']}")[2])["sinks"][0]["retries"] > 0
    # A FAILED pipeline cannot be paused: the API says why.
    status, _, body = get(base + f"/pipelines/{names['broken']}/pause", "POST")
    assert status == 409 and json.loads(body) == {"error": "pipeline is FAILED"}
    assert eng.stop() == 0


def test_a_source_pipeline_shows_its_plugins_counters(kafka, engines, tmp_path):
    from test_source_http import Client, kyc, source_addr, source_engine
    topic = unique("dash-src")
    create_topic(kafka, topic, 1)
    eng = source_engine(engines, kafka, tmp_path, {topic: "kyc-verified"}).start()
    base = eng.admin_url()
    client = Client(source_addr(eng))
    for i in range(3):
        assert client.post(topic, kyc("c-1", i))[0] == 202
    assert client.post(topic, {"customerId": "c-1"})[0] == 400
    client.close()

    d = json.loads(get(base + "/pipelines/ingest")[2])
    assert d["kind"] == "source" and d["source"] == "http" and d["lag"] is None
    assert d["records_in"] == 3, "the engine counts what a source produced"
    metrics = get(base + "/metrics")[2].decode()
    assert 'source_http_events_accepted_total{pipeline="ingest",source="http"} 3' in metrics
    assert d["metrics"]["source_http_events_accepted_total"] == 3
    assert d["metrics"]["source_http_events_rejected_total"] == 1
    assert d["metrics"]["source_http_requests_total"] == 4

    result = run_page(base + "/", [
        {"wait_for": f'{row("ingest")} .state[data-state="RUNNING"]'},
        {"eval": """() => [...document.querySelectorAll(
             'tr[data-pipeline="ingest"] td:first-child .metrics li')].map(li => li.textContent)""",
         "as": "metrics"},
        {"text": f'{row("ingest")} .sub', "as": "desc"},
    ])
    shown = result["results"]["metrics"]
    assert "source_http_events_accepted_total 3" in [m.split(" (")[0] for m in shown], shown
    assert "source_http_events_rejected_total 1" in [m.split(" (")[0] for m in shown], shown
    assert result["results"]["desc"] == "source: http"
    assert eng.stop() == 0
