"""Hot reload (SIGHUP and POST /reload): pipelines are diffed by name.
Unchanged ones are not touched, removed ones drain and stop, changed ones
drain and restart from their committed offsets (nothing lost, nothing twice),
new ones start, a plugin file dropped into the plugin path is discovered, and
an invalid configuration changes nothing."""
import json
import shutil
import signal
import time
import urllib.error
import urllib.request

from conftest import (FIXTURES, committed_offsets, create_topic, produce, read_ndjson, unique,
                      wait_for_lines)


def file_pipeline(name, topic, out):
    # The group is named after the topic: a group left behind by an earlier
    # run (killed, still in its session timeout) must not delay this one.
    return {"name": name, "topics": [topic], "group_id": f"g-{topic}",
            "sinks": [{"plugin": "file", "path": str(out / "${topic}.ndjson")}]}


def events(n, start=0, keys=20):
    for i in range(start, start + n):
        cust = f"cust-{i % keys:02d}"
        yield cust, json.dumps({"eventId": f"e-{i}", "customerId": cust, "n": i}).encode()


def write(eng, name, body):
    text = body if isinstance(body, str) else json.dumps(body, indent=2)
    tmp = eng.dir / f".{name}.json.tmp"
    tmp.write_text(text)
    tmp.rename(eng.dir / f"{name}.json")


def pipelines(eng):
    with urllib.request.urlopen(eng.admin_url() + "/pipelines", timeout=10) as r:
        return {p["name"]: p for p in json.load(r)}


def wait_until(pred, timeout=60, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout}s")


def count_reload_lines(eng):
    return eng.logs().count(": reloaded: ")


def test_sighup_stops_removed_restarts_changed_starts_new_without_loss(kafka, engines, tmp_path):
    ta, tb, tc = unique("reload-a"), unique("reload-b"), unique("reload-c")
    for t in (ta, tb, tc):
        create_topic(kafka, t, 3)
    out_a, out_b1, out_b2, out_c = (tmp_path / d for d in ("a", "b1", "b2", "c"))
    produce(kafka, ta, events(300))
    produce(kafka, tb, events(2000))
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]},
                  {"a": file_pipeline("a", ta, out_a), "b": file_pipeline("b", tb, out_b1)}).start()
    assert wait_for_lines(out_a / f"{ta}.ndjson", 300, proc=eng.proc) == 300
    assert wait_for_lines(out_b1 / f"{tb}.ndjson", 2000, proc=eng.proc) == 2000

    # More for b while it is being reloaded: some of it is in flight when
    # the old b drains, the rest is read by the new b.
    produce(kafka, tb, events(3000, start=2000))
    (eng.dir / "a.json").unlink()
    write(eng, "b", file_pipeline("b", tb, out_b2))
    write(eng, "c", file_pipeline("c", tc, out_c))
    eng.proc.send_signal(signal.SIGHUP)
    eng.wait_log("SIGHUP: reloaded: 0 unchanged, 1 started, 1 restarting, 1 stopping")
    produce(kafka, tb, events(1000, start=5000))
    produce(kafka, tc, events(200))
    assert wait_for_lines(out_c / f"{tc}.ndjson", 200, proc=eng.proc) == 200

    def b_total():
        n = sum(len(read_ndjson(d / f"{tb}.ndjson")) for d in (out_b1, out_b2)
                if (d / f"{tb}.ndjson").exists())
        return n >= 6000 and n
    wait_until(b_total, 90, "6000 records of b")
    time.sleep(1.0)  # anything extra (a duplicate) would show up now
    seen = []
    for d in (out_b1, out_b2):
        p = d / f"{tb}.ndjson"
        if p.exists():
            seen += [r["value"]["n"] for r in read_ndjson(p)]
    assert sorted(seen) == list(range(6000)), \
        f"{len(seen)} records, {len(set(seen))} distinct"
    assert (out_b2 / f"{tb}.ndjson").exists(), "the new b wrote nothing"

    names = wait_until(lambda: set(pipelines(eng)) == {"b", "c"} and set(pipelines(eng)),
                       30, "pipelines {b, c}")
    assert names == {"b", "c"}
    assert all(p["state"] == "RUNNING" for p in pipelines(eng).values())
    # The removed pipeline committed everything it wrote before stopping.
    assert sum(committed_offsets(kafka, f"g-{ta}", ta).values()) == 300
    assert "[a] SIGHUP: removed, draining" in eng.logs()
    assert "[b] SIGHUP: changed, draining before restarting" in eng.logs()
    assert eng.stop() == 0


def test_unchanged_pipeline_is_untouched_and_invalid_config_changes_nothing(
        kafka, engines, tmp_path):
    t = unique("reload-keep")
    create_topic(kafka, t, 1)
    out = tmp_path / "out"
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]},
                  {"keep": file_pipeline("keep", t, out)}).start()
    produce(kafka, t, events(100))
    assert wait_for_lines(out / f"{t}.ndjson", 100, proc=eng.proc) == 100

    eng.proc.send_signal(signal.SIGHUP)
    eng.wait_log("SIGHUP: reloaded: 1 unchanged, 0 started, 0 restarting, 0 stopping")
    assert "[keep] SIGHUP" not in eng.logs()

    # A broken file: the reload is refused with file, place and reason, and
    # the running pipeline goes on consuming.
    (eng.dir / "broken.json").write_text('{"name": "broken", "topics": [')
    write(eng, "keep", {"name": "keep", "topics": [t], "group_id": f"g-{t}",
                       "sinks": [{"plugin": "file"}]})
    eng.proc.send_signal(signal.SIGHUP)
    eng.wait_log("SIGHUP: configuration is invalid, keeping the running one")
    logs = eng.logs()
    assert "broken.json" in logs
    assert "keep.json: sinks[0]" in logs and "path" in logs
    produce(kafka, t, events(50, start=100))
    assert wait_for_lines(out / f"{t}.ndjson", 150, proc=eng.proc) == 150
    assert set(pipelines(eng)) == {"keep"}
    with urllib.request.urlopen(eng.admin_url() + "/metrics", timeout=10) as r:
        metrics = r.read().decode()
    assert 'connectd_reloads_total{result="invalid"} 1' in metrics
    assert 'connectd_reloads_total{result="ok"} 1' in metrics
    assert eng.stop() == 0


def test_a_plugin_dropped_into_the_plugin_path_is_discovered_on_reload(kafka, engines, tmp_path):
    t = unique("reload-plugin")
    create_topic(kafka, t, 1)
    plugdir = tmp_path / "plugins"
    plugdir.mkdir()
    out = tmp_path / "out"
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]},
                  {"files": file_pipeline("files", t, out)},
                  engine_extra={"plugin_path": str(plugdir)}).start()
    produce(kafka, t, events(40))
    assert wait_for_lines(out / f"{t}.ndjson", 40, proc=eng.proc) == 40

    # A team ships a new sink: no rebuild, no restart.
    shutil.copy(FIXTURES / "good_sink.so", plugdir / "good_sink.so")
    write(eng, "newsink", {"name": "newsink", "topics": [t],
                           "group_id": f"g-new-{t}", "sinks": [{"plugin": "test-good", "target": "anywhere"}]})
    eng.proc.send_signal(signal.SIGHUP)
    eng.wait_log("new plugin(s) discovered")
    eng.wait_log("SIGHUP: reloaded: 1 unchanged, 1 started, 0 restarting, 0 stopping")
    wait_until(lambda: pipelines(eng).get("newsink", {}).get("state") == "RUNNING", 30,
               "newsink running")
    wait_until(lambda: sum(committed_offsets(kafka, f"g-new-{t}", t).values()) == 40, 60,
               "newsink committing what the new plugin acknowledged")
    assert eng.stop() == 0


def post(url):
    req = urllib.request.Request(url, method="POST", data=b"")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def test_post_reload_answers_what_it_did_and_a_failed_pipeline_shows_why(kafka, engines,
                                                                       tmp_path):
    t = unique("reload-http")
    create_topic(kafka, t, 1)
    out = tmp_path / "out"
    # A DynamoDB sink without any AWS credentials cannot start: the pipeline
    # is FAILED with the reason, the other one runs.
    none = {k: None for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                              "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                              "AWS_CONTAINER_CREDENTIALS_FULL_URI")}
    nocreds = {"name": "nocreds", "topics": [t], "group_id": f"g-nc-{t}",
               "sinks": [{"plugin": "dynamodb", "table": "t", "region": "eu-west-1",
                          "endpoint": "http://127.0.0.1:1", "item": {"pk": "${/customerId}"}}]}
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]},
                  {"files": file_pipeline("files", t, out), "nocreds": nocreds}, env=none).start()
    produce(kafka, t, events(10))
    assert wait_for_lines(out / f"{t}.ndjson", 10, proc=eng.proc) == 10
    p = wait_until(lambda: pipelines(eng).get("nocreds", {}).get("state") == "FAILED"
                   and pipelines(eng)["nocreds"], 30, "nocreds FAILED")
    assert "no AWS credentials" in json.dumps(p), p

    url = eng.admin_url() + "/reload"
    # Invalid: 400 with every error, nothing touched.
    (eng.dir / "bad.json").write_text(
        '{"name": "bad", "topics": ["x"], "sinks": [{"plugin": "nope"}]}')
    status, body = post(url)
    assert status == 400, body
    assert body["result"] == "invalid"
    assert any("bad.json" in e and "nope" in e for e in body["errors"]), body
    (eng.dir / "bad.json").unlink()
    # Valid JSON and options, but the plugin's own init refuses it (a
    # template naming nothing a record has): refused too, as `connectd
    # validate` would, instead of replacing a running pipeline with one that
    # can only fail.
    write(eng, "files", {"name": "files", "topics": [t], "group_id": f"g-{t}",
                         "sinks": [{"plugin": "file", "path": str(out / "${nope}.ndjson")}]})
    status, body = post(url)
    assert status == 400, body
    assert any("files.json: sinks[0]" in e for e in body["errors"]), body
    assert pipelines(eng)["files"]["state"] == "RUNNING"
    write(eng, "files", file_pipeline("files", t, out))

    # Valid: the failed pipeline is retried, the healthy one left alone.
    status, body = post(url)
    assert status == 200, body
    assert body["result"] == "ok"
    assert body["unchanged"] == ["files"] and body["restarted"] == ["nocreds"], body
    assert body["started"] == [] and body["stopped"] == [], body
    eng.wait_log("[nocreds] stopped")
    produce(kafka, t, events(5, start=10))
    assert wait_for_lines(out / f"{t}.ndjson", 15, proc=eng.proc) == 15
    # GET is not a reload.
    try:
        urllib.request.urlopen(url, timeout=10)
        raise AssertionError("GET /reload should be refused")
    except urllib.error.HTTPError as e:
        assert e.code == 405
    assert eng.stop() == 0
