"""The admin API over real HTTP: health, readiness, metrics, pipelines,
pause and resume."""
import json
import time
import urllib.error
import urllib.request

from conftest import create_topic, produce, unique, wait_for_lines


def call(url, method="GET"):
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


def test_admin_api_reports_and_controls_pipelines(kafka, engines, tmp_path):
    topic = unique("admin")
    create_topic(kafka, topic, 2)
    produce(kafka, topic, [(f"c{i % 5}", b'{"customerId":"c%d","n":%d}' % (i % 5, i))
                           for i in range(100)])
    out = tmp_path / "x.ndjson"
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]},
                  {"p": {"name": "admin-test", "topics": [topic],
                         "sinks": [{"plugin": "file", "name": "archive", "path": str(out)}]}})
    eng.start()
    base = eng.admin_url()
    assert wait_for_lines(out, 100, proc=eng.proc) == 100

    status, ctype, body = call(base + "/healthz")
    assert status == 200 and ctype == "application/json" and json.loads(body) == {"status": "ok"}
    status, _, body = call(base + "/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready"

    time.sleep(0.5)  # a commit interval
    status, _, body = call(base + "/pipelines/admin-test")
    assert status == 200
    d = json.loads(body)
    assert d["state"] == "RUNNING" and d["group_id"] == "connectd.admin-test"
    assert d["records_in"] == 100 and d["sinks"][0]["records_out"] == 100
    parts = {p["partition"]: p for p in d["partitions"]}
    assert set(parts) == {0, 1}
    assert sum(p["committed"] for p in parts.values()) == 100
    assert all(p["lag"] == 0 for p in parts.values()), parts

    status, _, body = call(base + "/pipelines")
    assert status == 200 and [p["name"] for p in json.loads(body)] == ["admin-test"]

    status, ctype, text = call(base + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    assert 'connectd_records_in_total{pipeline="admin-test"} 100' in text
    assert 'connectd_records_out_total{pipeline="admin-test",sink="archive"} 100' in text
    assert "# TYPE connectd_consumer_lag gauge" in text
    assert 'sink_file_bytes_written_total{pipeline="admin-test",sink="archive"}' in text

    # Pause: new records are not consumed; resume: they are.
    status, _, body = call(base + "/pipelines/admin-test/pause", "POST")
    assert status == 200 and json.loads(body)["state"] == "PAUSED"
    produce(kafka, topic, [("c1", b'{"customerId":"c1","n":100}')])
    time.sleep(1.5)
    assert wait_for_lines(out, 101, timeout=0.1) == 100
    status, _, body = call(base + "/pipelines/admin-test/resume", "POST")
    assert status == 200 and json.loads(body)["state"] == "RUNNING"
    assert wait_for_lines(out, 101, proc=eng.proc) == 101

    assert call(base + "/pipelines/nope")[0] == 404
    assert call(base + "/pipelines/admin-test/pause")[0] == 405
    assert call(base + "/nothing")[0] == 404
    assert eng.stop() == 0
    assert "state RUNNING -> PAUSED" in eng.logs() and "state PAUSED -> RUNNING" in eng.logs()


def test_admin_port_in_use_is_a_clear_error(kafka, engines, tmp_path):
    first = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]}, {}).start()
    addr = first.admin_url()[len("http://"):]
    second = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]}, {},
                     engine_extra={"admin_listen": addr})
    second.start()
    rc = second.proc.wait(timeout=30)
    assert rc == 1
    assert f"admin API: listen {addr}: address already in use" in second.logs()
    assert first.stop() == 0


def test_the_engine_raises_its_open_file_limit(kafka, engines, tmp_path):
    """Thousands of WebSocket clients are thousands of descriptors: the soft
    limit goes up to the hard one (at most 1,048,576) when `run` starts."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard if hard != resource.RLIM_INFINITY else 1048576, 1048576)
    topic = unique("fdlimit")
    create_topic(kafka, topic, 1)
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]},
                  {"p": {"name": "fd", "topics": [topic],
                         "sinks": [{"plugin": "file", "path": str(tmp_path / "o.ndjson")}]}})
    # Start it with a low soft limit, as a default systemd or docker one.
    import subprocess
    eng.runs += 1
    eng.log = open(eng.log_path, "ab")
    eng.proc = subprocess.Popen(
        ["sh", "-c", f'ulimit -Sn 1024 && exec "$0" run -c "$1"',
         str(__import__("conftest").CONNECTD), str(eng.dir / "connectd.json")],
        stdout=eng.log, stderr=subprocess.STDOUT, env=eng.env)
    eng.admin_url()
    with open(f"/proc/{eng.proc.pid}/limits") as f:
        line = next(l for l in f if l.startswith("Max open files"))
    assert int(line.split()[3]) == want, line
    assert eng.stop() == 0
