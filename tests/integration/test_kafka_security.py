"""The MSK-style listener: SASL_SSL with SCRAM-SHA-512 works end to end, and a
wrong password is a clear, prompt error naming the listener and mechanism."""
import time

from conftest import create_topic, produce, read_ndjson, unique, wait_for_lines


def sasl_props(kafka, password):
    return {"bootstrap.servers": kafka["KAFKA_SASL_BOOTSTRAP"], "security.protocol": "SASL_SSL",
            "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": kafka["KAFKA_SCRAM_USER"],
            "sasl.password": password, "ssl.ca.location": kafka["KAFKA_CA_PEM"]}


def test_consumes_through_sasl_ssl_scram_sha_512(kafka, engines, tmp_path):
    topic = unique("workflow-completed")
    create_topic(kafka, topic, 3)
    produce(kafka, topic, [(f"c{i % 7}", b'{"eventId":"e%d","customerId":"c%d"}' % (i, i % 7))
                           for i in range(500)])
    # The password reaches the engine through ${file:...}, as a mounted
    # secret would on ECS, never written into the config itself.
    secret = tmp_path / "scram-password"
    secret.write_text(kafka["KAFKA_SCRAM_PASSWORD"] + "\n")
    out = tmp_path / "out"
    eng = engines(sasl_props(kafka, f"${{file:{secret}}}"),
                  {"p": {"name": "sasl", "topics": [topic],
                         "sinks": [{"plugin": "file", "path": str(out / "x.ndjson")}]}}).start()
    assert wait_for_lines(out / "x.ndjson", 500, proc=eng.proc) == 500, eng.logs()[-3000:]
    ids = sorted(r["value"]["eventId"] for r in read_ndjson(out / "x.ndjson"))
    assert ids == sorted(f"e{i}" for i in range(500))
    assert "127.0.0.1:%s (SASL_SSL, SCRAM-SHA-512)" % kafka["KAFKA_SASL_BOOTSTRAP"].split(":")[1] \
        in eng.logs()
    assert kafka["KAFKA_SCRAM_PASSWORD"] not in eng.logs(), "a secret reached the log"
    assert eng.stop() == 0


def test_wrong_password_is_a_clear_error_not_a_hang(kafka, engines, tmp_path):
    topic = unique("workflow-errors")
    create_topic(kafka, topic, 1)
    eng = engines(sasl_props(kafka, "not-the-password"),
                  {"p": {"name": "badauth", "topics": [topic],
                         "sinks": [{"plugin": "file", "path": str(tmp_path / "x.ndjson")}]}})
    t0 = time.time()
    eng.start()
    rc = eng.proc.wait(timeout=60)
    elapsed = time.time() - t0
    logs = eng.logs()
    assert rc == 2, logs[-3000:]
    assert elapsed < 30, f"took {elapsed:.1f}s to give up"
    want = "Kafka authentication failed on %s (SASL_SSL, SCRAM-SHA-512)" % kafka["KAFKA_SASL_BOOTSTRAP"]
    assert want in logs, logs[-3000:]
    assert "not-the-password" not in logs
