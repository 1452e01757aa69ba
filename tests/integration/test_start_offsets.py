"""Where a pipeline's consumer starts on the partitions it is assigned.

The engine resolves the start of each newly assigned partition itself (the
committed offset, or where auto.offset.reset points) before it assigns it,
so a fresh group does not wait out librdkafka's backoff.  These tests pin the
semantics that must not change with it: committed offsets win, partitions
without one start where auto.offset.reset says, and large assignments (left
to librdkafka) behave the same."""
import json
import time

from conftest import (committed_offsets, consume_all, create_topic, kafka_admin, produce,
                      read_ndjson, unique, wait_for_lines)


def records(prefix, n, keys=7):
    for i in range(n):
        yield f"k-{i % keys}", json.dumps({"eventId": f"{prefix}-{i}", "i": i}).encode()


def pipeline(name, topic, out, group, **extra):
    p = {"name": name, "topics": [topic], "group_id": group,
         "batch": {"max_records": 100, "linger_ms": 5},
         "sinks": [{"plugin": "file", "path": str(out / "${topic}.ndjson")}]}
    p.update(extra)
    return p


def by_partition(kafka, topic):
    """(partition, offset) -> eventId of everything in the topic, read by kcat."""
    got = {}
    for line in consume_all(kafka, topic, fmt="%p\t%o\t%s\n").splitlines():
        p, o, v = line.split("\t", 2)
        got[(int(p), int(o))] = json.loads(v)["eventId"]
    return got


def test_committed_offsets_win_and_uncommitted_partitions_start_at_the_earliest(
        kafka, engines, tmp_path):
    topic, group = unique("start-committed"), unique("start-committed-g")
    create_topic(kafka, topic, 3)
    produce(kafka, topic, records("a", 60))
    stored = by_partition(kafka, topic)
    assert len(stored) == 60
    # Partition 0 resumes at 4, partition 1 at its end; partition 2 has no
    # committed offset.
    ends = {p: 1 + max(o for (q, o) in stored if q == p) for p in range(3)}
    kafka_admin("set-offsets", group, topic, "0:4", f"1:{ends[1]}")
    want = {eid for (p, o), eid in stored.items() if (p == 0 and o >= 4) or p == 2}
    out = tmp_path / "out"
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]},
                  {"p": pipeline("start-committed", topic, out, group)}).start()
    path = out / f"{topic}.ndjson"
    assert wait_for_lines(path, len(want), timeout=60, proc=eng.proc) == len(want)
    time.sleep(1.0)  # nothing beyond what is expected arrives
    got = [r["value"]["eventId"] for r in read_ndjson(path)]
    assert sorted(got) == sorted(want), (len(got), len(want))
    assert eng.stop() == 0
    assert committed_offsets(kafka, group, topic) == ends


def test_a_fresh_group_with_latest_reads_only_what_is_produced_after_it_started(
        kafka, engines, tmp_path):
    topic, group = unique("start-latest"), unique("start-latest-g")
    create_topic(kafka, topic, 3)
    produce(kafka, topic, records("old", 30))
    out = tmp_path / "out"
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]},
                  {"p": pipeline("start-latest", topic, out, group,
                                 kafka={"auto.offset.reset": "latest"})}).start()
    eng.wait_log("assigned 3 partition(s)")
    time.sleep(1.0)
    produce(kafka, topic, records("new", 12))
    path = out / f"{topic}.ndjson"
    assert wait_for_lines(path, 12, timeout=60, proc=eng.proc) == 12
    time.sleep(1.0)
    got = sorted(r["value"]["eventId"] for r in read_ndjson(path))
    assert got == sorted(f"new-{i}" for i in range(12))
    assert eng.stop() == 0


def test_an_assignment_over_32_partitions_is_left_to_librdkafka_and_reads_everything(
        kafka, engines, tmp_path):
    topic, group = unique("start-many"), unique("start-many-g")
    create_topic(kafka, topic, 40)
    produce(kafka, topic, records("m", 400, keys=97))
    out = tmp_path / "out"
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]},
                  {"p": pipeline("start-many", topic, out, group)}).start()
    path = out / f"{topic}.ndjson"
    assert wait_for_lines(path, 400, timeout=60, proc=eng.proc) == 400
    got = sorted(r["value"]["eventId"] for r in read_ndjson(path))
    assert got == sorted(f"m-{i}" for i in range(400))
    assert eng.stop() == 0
