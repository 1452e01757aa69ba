"""Bad input never crashes the engine: broken files are refused with
file: path: reason, records that are not JSON are handled by policy."""
import json
import subprocess

from conftest import (CONNECTD, FIXTURES, committed_offsets, consume_all, create_topic, produce,
                      read_ndjson, unique, wait_for_lines)


def run(args, env=None, timeout=60):
    import os
    return subprocess.run([str(CONNECTD), *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


def write(d, name, body):
    (d / name).write_text(body if isinstance(body, str) else json.dumps(body))


def test_validate_reports_malformed_file_and_unknown_plugin(tmp_path):
    write(tmp_path, "connectd.json", {"kafka": {"bootstrap.servers": "127.0.0.1:1"}})
    write(tmp_path, "broken.json", '{\n  "name": "broken",\n  "topics": ["a"]\n  "sinks": []\n}\n')
    write(tmp_path, "unknown.json", {"name": "u", "topics": ["a"],
                                     "sinks": [{"plugin": "dynamo-typo", "table": "x"}]})
    write(tmp_path, "bad-option.json", {"name": "b", "topics": ["a"],
                                        "sinks": [{"plugin": "file", "path": "x", "fsync": "often"}]})
    p = run(["validate", "-c", str(tmp_path / "connectd.json")])
    assert p.returncode != 0
    lines = p.stdout.splitlines()
    assert f"{tmp_path}/broken.json: line 4, column 9: malformed JSON: '}}' expected near '\"sinks\"'" \
        in lines, p.stdout
    assert f"{tmp_path}/unknown.json: sinks[0].plugin: unknown plugin \"dynamo-typo\"" in lines
    assert f"{tmp_path}/bad-option.json: sinks[0].fsync: \"often\" is not one of never|batch" in lines
    # run refuses to start with the same lines in its log, and does not crash.
    r = run(["run", "-c", str(tmp_path / "connectd.json")])
    assert r.returncode == 1
    assert "unknown plugin \"dynamo-typo\"" in r.stderr


def test_validate_passes_and_plugins_lists_the_file_sink(tmp_path):
    write(tmp_path, "connectd.json", {"kafka": {"bootstrap.servers": "127.0.0.1:1"}})
    write(tmp_path, "ok.json", {"name": "ok", "topics": ["a"],
                                "sinks": [{"plugin": "file", "path": "out/${topic}.ndjson"}]})
    p = run(["validate", "-c", str(tmp_path / "connectd.json")])
    assert p.returncode == 0, p.stdout + p.stderr
    p = run(["plugins"])
    assert p.returncode == 0
    assert "## file (sink," in p.stdout
    assert "| path | string |" in p.stdout


def test_validate_runs_plugin_init_and_reports_template_errors(tmp_path):
    write(tmp_path, "connectd.json", {})
    write(tmp_path, "t.json", {"name": "t", "topics": ["a"],
                               "sinks": [{"plugin": "file", "path": "out/${nope}.ndjson"}]})
    p = run(["validate", "-c", str(tmp_path / "connectd.json")])
    assert p.returncode == 1
    assert p.stdout.startswith(f"{tmp_path}/t.json: sinks[0]: "), p.stdout
    assert "nope" in p.stdout


def test_refused_modules_are_logged_and_the_rest_load(tmp_path):
    p = run(["plugins"], env={"CONNECTD_PLUGIN_PATH": str(FIXTURES)})
    assert p.returncode == 0
    assert "## test-good (sink," in p.stdout and "## file (sink," in p.stdout
    err = p.stderr
    assert f"plugin {FIXTURES}/abi_mismatch.so refused: not binary compatible: built for plugin " \
           "ABI 2.0, this engine speaks 1.6" in err
    assert f"plugin {FIXTURES}/no_entry.so refused: no entry symbol connectd_plugin_entry" in err
    assert f"plugin {FIXTURES}/bad_desc.so refused: bad descriptor" in err


def test_version():
    p = run(["--version"])
    assert p.returncode == 0 and p.stdout.startswith("connectd ")


def not_json_records():
    return [("k1", b'{"eventId":"a","customerId":"k1"}'), ("k2", b"this is not json {"),
            ("k3", b'{"eventId":"c","customerId":"k3"}')]


def test_raw_value_format_writes_non_json_as_a_string(kafka, engines, tmp_path):
    topic = unique("raw")
    create_topic(kafka, topic, 1)
    produce(kafka, topic, not_json_records())
    out = tmp_path / "out"
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]},
                  {"p": {"name": "raw", "topics": [topic], "value_format": "raw",
                         "sinks": [{"plugin": "file", "path": str(out / "x.ndjson")}]}}).start()
    assert wait_for_lines(out / "x.ndjson", 3, proc=eng.proc) == 3
    vals = [r["value"] for r in read_ndjson(out / "x.ndjson")]
    assert vals == ['{"eventId":"a","customerId":"k1"}', "this is not json {",
                    '{"eventId":"c","customerId":"k3"}']
    assert eng.stop() == 0


def test_json_value_that_is_not_json_goes_to_the_dead_letter_topic(kafka, engines, tmp_path):
    topic = unique("dlq-src")
    dlq = topic + ".dlq"
    create_topic(kafka, topic, 1)
    create_topic(kafka, dlq, 1)
    produce(kafka, topic, not_json_records())
    out = tmp_path / "out"
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]},
                  {"p": {"name": "dlqtest", "topics": [topic],
                         "errors": {"tolerance": "all", "dead_letter_topic": dlq},
                         "sinks": [{"plugin": "file", "path": str(out / "x.ndjson")}]}}).start()
    assert wait_for_lines(out / "x.ndjson", 2, proc=eng.proc) == 2
    got = consume_all(kafka, dlq, fmt="%k\t%s\t%h\n", expect=1)
    key, value, headers = got.strip("\n").split("\t")
    assert key == "k2" and value == "this is not json {"
    h = dict(kv.split("=", 1) for kv in headers.split(","))
    assert h["connectd.error.pipeline"] == "dlqtest"
    assert h["connectd.error.class"] == "conversion"
    assert h["connectd.error.message"].startswith("value is not JSON")
    assert h["connectd.error.topic"] == topic
    assert h["connectd.error.partition"] == "0" and h["connectd.error.offset"] == "1"
    assert "connectd.error.attempts" in h and "connectd.error.sink" in h
    assert eng.stop() == 0
    assert committed_offsets(kafka, "connectd.dlqtest", topic) == {0: 3}


def test_tolerance_none_fails_the_pipeline_without_committing_past_the_record(
        kafka, engines, tmp_path):
    topic = unique("strict")
    create_topic(kafka, topic, 1)
    produce(kafka, topic, not_json_records())
    out = tmp_path / "out"
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]},
                  {"p": {"name": "strict", "topics": [topic],
                         "sinks": [{"plugin": "file", "path": str(out / "x.ndjson")}]}}).start()
    eng.wait_log("state RUNNING -> FAILED")
    assert "record " + topic + "[0]@1: value is not JSON" in eng.logs()
    assert wait_for_lines(out / "x.ndjson", 1, proc=eng.proc) >= 1
    import time
    time.sleep(1)  # a few commit intervals
    assert eng.stop() == 0
    assert committed_offsets(kafka, "connectd.strict", topic) == {0: 1}


def test_every_plugin_readme_carries_its_option_table_as_connectd_plugins_prints_it():
    from conftest import ROOT
    out = run(["plugins"]).stdout
    sections = [s for s in out.split("## ")[1:]]
    assert sections, out
    for sec in sections:
        name = sec.split(" ", 1)[0]
        module = [l for l in sec.splitlines() if l.startswith("Module: ")][0][8:]
        plugin_dir = ROOT / "plugins" / module.rsplit("/", 1)[1].removesuffix(".so")
        table = sec[sec.index("| option |"):].strip().split("\n\n")[0]
        readme = (plugin_dir / "README.md").read_text()
        assert table in readme, f"{plugin_dir}/README.md lacks the option table of {name}:\n{table}"
