"""Delivery under failure, with the scripted test sink (tests/fixtures/
scripted_sink.c): retries keep per-key order without stalling other keys,
poison records are dead-lettered with every header, tolerance none fails the
pipeline without committing past the record, memory stays bounded while a
sink is down, and SIGKILL during retries loses nothing."""
import json
import os
import signal
import time
from collections import defaultdict

from conftest import (FIXTURES, committed_offsets, consume_all, create_topic, produce, unique,
                      wait_for_lines)

ENV = {"CONNECTD_PLUGIN_PATH": str(FIXTURES)}


def records(n, keys, start=0):
    for i in range(start, start + n):
        cust = f"cust-{i % keys:03d}"
        yield cust, json.dumps({"eventId": f"e-{i}", "customerId": cust, "seq": i // keys,
                                "pad": "x" * 200}, separators=(",", ":")).encode()


def read_out(path):
    """The scripted sink's lines: (key, partition, offset, value)."""
    out = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        k, p, o, v = line.split("\t", 3)
        out.append((k, int(p), int(o), json.loads(v)))
    return out


def scripted(out, **opts):
    return dict({"plugin": "test-scripted", "name": "scripted", "output": str(out)}, **opts)


def pipeline(name, topic, sink, **extra):
    p = {"name": name, "topics": [topic], "sinks": [sink],
         "batch": {"max_records": 100, "linger_ms": 2}}
    p.update(extra)
    return p


def assert_per_key_order(lines):
    per_key = defaultdict(list)
    for k, _, _, v in lines:
        per_key[k].append(v["seq"])
    for k, seqs in per_key.items():
        assert all(a < b for a, b in zip(seqs, seqs[1:])), f"{k}: {seqs[:30]}"


def test_retry_then_success_keeps_per_key_order_without_stalling_other_keys(
        kafka, engines, tmp_path):
    topic = unique("retry-order")
    create_topic(kafka, topic, 1)
    produce(kafka, topic, records(2_000, 20))
    out = tmp_path / "out.tsv"
    sink = scripted(out, fail_key="cust-007", fail_key_times=3)
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]},
                  {"p": pipeline("retry-order", topic, sink,
                                 retry={"initial_ms": 300, "max_ms": 600, "max_attempts": 10})},
                  env=ENV).start()
    assert wait_for_lines(out, 2_000, proc=eng.proc) == 2_000, eng.logs()[-3000:]
    lines = read_out(out)
    assert_per_key_order(lines)
    assert len({v["eventId"] for *_, v in lines}) == 2_000
    # The first cust-007 record (offset 7) waited for three backoffs; records
    # of other keys behind it in the partition went on meanwhile.
    pos = {o: i for i, (_, _, o, _) in enumerate(lines)}
    assert pos[7] > pos[1_500], "other keys were stalled behind the retried key"
    assert "retry 3 of key" in eng.logs()
    assert eng.stop() == 0
    assert committed_offsets(kafka, "connectd.retry-order", topic) == {0: 2_000}


def test_retry_after_hint_is_honoured(kafka, engines, tmp_path):
    topic = unique("hint")
    create_topic(kafka, topic, 1)
    produce(kafka, topic, records(10, 2))
    out = tmp_path / "out.tsv"
    sink = scripted(out, fail_first=1, retry_after_ms=1500)
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]},
                  {"p": pipeline("hint", topic, sink, retry={"initial_ms": 1, "max_ms": 5000})},
                  env=ENV).start()
    eng.wait_log("assigned")
    t0 = time.time()
    assert wait_for_lines(out, 10, proc=eng.proc) == 10
    assert time.time() - t0 >= 1.4, "the sink's retry-after hint was not waited for"
    assert eng.stop() == 0


def dlq_headers(kafka, dlq, expect):
    got = consume_all(kafka, dlq, fmt="%k\t%s\t%h\n", expect=expect).strip("\n").split("\n")
    out = []
    for line in got:
        key, value, headers = line.split("\t")
        out.append((key, value, dict(kv.split("=", 1) for kv in headers.split(","))))
    return out


def test_poison_record_is_dead_lettered_with_every_header_and_the_partition_moves_on(
        kafka, engines, tmp_path):
    topic = unique("poison")
    dlq = topic + ".dlq"
    create_topic(kafka, topic, 1)
    create_topic(kafka, dlq, 1)
    produce(kafka, topic, records(300, 10))
    out = tmp_path / "out.tsv"
    sink = scripted(out, fatal_offset=42, fail_key="cust-003", fail_key_times=-1)
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]},
                  {"p": pipeline("poison", topic, sink,
                                 retry={"initial_ms": 10, "max_ms": 20, "max_attempts": 3},
                                 errors={"tolerance": "all", "dead_letter_topic": dlq})},
                  env=ENV).start()
    # cust-003 always fails: its 30 records are dead-lettered after 3 tries
    # each; offset 42 (cust-002) is fatal at once; 269 records are written.
    assert wait_for_lines(out, 269, proc=eng.proc, timeout=60) >= 269, eng.logs()[-3000:]
    time.sleep(0.5)  # a record written twice or by mistake would show up now
    written = sorted(o for _, _, o, _ in read_out(out))
    want = [o for o in range(300) if o != 42 and o % 10 != 3]
    dups = sorted({o for o in written if written.count(o) > 1})
    assert written == want, (f"{len(written)} lines; written twice: {dups}; not expected: "
                             f"{sorted(set(written) - set(want))}; missing: "
                             f"{sorted(set(want) - set(written))}\n{eng.logs()[-3000:]}")
    got = dlq_headers(kafka, dlq, expect=31)
    assert len(got) == 31
    fatal = [g for g in got if g[2]["connectd.error.class"] == "fatal"]
    assert len(fatal) == 1
    key, value, h = fatal[0]
    assert key == "cust-002" and json.loads(value)["eventId"] == "e-42"
    assert h["connectd.error.pipeline"] == "poison"
    assert h["connectd.error.sink"] == "scripted"
    assert h["connectd.error.message"] == "scripted fatal"
    assert h["connectd.error.attempts"] == "1"
    assert h["connectd.error.topic"] == topic
    assert h["connectd.error.partition"] == "0"
    assert h["connectd.error.offset"] == "42"
    assert int(h["connectd.error.timestamp"]) > 1_600_000_000_000
    exhausted = [g for g in got if g[2]["connectd.error.class"] == "retriable"]
    assert len(exhausted) == 30 and all(g[0] == "cust-003" for g in exhausted)
    assert all(g[2]["connectd.error.attempts"] == "3" for g in exhausted)
    assert exhausted[0][2]["connectd.error.message"].startswith("retries exhausted after 3")
    assert eng.stop() == 0
    assert committed_offsets(kafka, "connectd.poison", topic) == {0: 300}


def test_tolerance_none_fails_and_commits_nothing_past_the_failing_record(
        kafka, engines, tmp_path):
    topic = unique("strict-sink")
    create_topic(kafka, topic, 1)
    produce(kafka, topic, records(200, 10))
    out = tmp_path / "out.tsv"
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]},
                  {"p": pipeline("strict-sink", topic, scripted(out, fatal_offset=57))},
                  env=ENV).start()
    eng.wait_log("state RUNNING -> FAILED")
    assert "sink scripted: record %s[0]@57: scripted fatal" % topic in eng.logs()
    time.sleep(1)
    offsets = sorted(o for _, _, o, _ in read_out(out))
    assert 57 not in offsets and offsets[:57] == list(range(57))
    assert eng.stop() == 0
    assert committed_offsets(kafka, "connectd.strict-sink", topic) == {0: 57}


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0


# The engine's own bounds (2,000 records per partition, 3,000 per pipeline,
# ~260 bytes each) plus librdkafka's prefetch (paused partitions fetch
# nothing) and the process itself: 64 MiB leaves room for allocator slack.
RSS_BOUND_MIB = 64
if os.environ.get("CONNECTD_SANITIZE") == "1":
    # AddressSanitizer's shadow memory and quarantine add a fixed overhead
    # (about 45 MiB measured here); the bound on the engine's share stays.
    RSS_BOUND_MIB += 64


def test_sink_down_for_20s_with_20000_records_waiting_stays_bounded_then_delivers_all(
        kafka, engines, tmp_path):
    topic = unique("outage")
    create_topic(kafka, topic, 3)
    produce(kafka, topic, records(20_000, 200))
    out = tmp_path / "out.tsv"
    sink = scripted(out, down_ms=20_000)
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]},
                  {"p": pipeline("outage", topic, sink, max_inflight_records=2_000,
                                 max_pipeline_inflight_records=3_000,
                                 retry={"initial_ms": 200, "max_ms": 2_000, "max_attempts": 1000,
                                        "max_elapsed_ms": 120_000})},
                  env=ENV).start()
    time.sleep(18)
    assert not out.exists() or out.stat().st_size == 0, "the sink was supposed to be down"
    during = peak_rss_mib(eng.proc.pid)
    assert wait_for_lines(out, 20_000, proc=eng.proc, timeout=90) == 20_000, eng.logs()[-3000:]
    peak = peak_rss_mib(eng.proc.pid)
    print(f"peak RSS while down: {during:.1f} MiB, overall: {peak:.1f} MiB")
    assert peak < RSS_BOUND_MIB, f"peak RSS {peak:.1f} MiB over the {RSS_BOUND_MIB} MiB bound"
    lines = read_out(out)
    assert len({v["eventId"] for *_, v in lines}) == 20_000
    assert_per_key_order(lines)
    import re
    paused_at = [int(n) for n in re.findall(r"paused fetching: (\d+) records", eng.logs())]
    assert any(n >= 3_000 for n in paused_at), f"the pipeline-wide mark never paused: {paused_at}"
    assert "resumed fetching" in eng.logs()
    assert eng.stop() == 0


def test_sigkill_during_retries_then_restart_loses_nothing(kafka, engines, tmp_path):
    topic = unique("kill-retry")
    create_topic(kafka, topic, 3)
    produce(kafka, topic, records(5_000, 50))
    out = tmp_path / "out.tsv"
    props = {"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"], "session.timeout.ms": 6000}
    flaky = engines(props, {"p": pipeline("kill-retry", topic,
                                          scripted(out, failure_rate=0.3),
                                          retry={"initial_ms": 300, "max_ms": 1000,
                                                 "max_attempts": 1000})},
                    env=ENV, engine_extra={"commit_interval_ms": 100}).start()
    assert wait_for_lines(out, 500, proc=flaky.proc) >= 500
    assert "retry" in flaky.logs()
    flaky.kill()
    healthy = engines(props, {"p": pipeline("kill-retry", topic, scripted(out))},
                      env=ENV).start()
    deadline = time.time() + 90
    while time.time() < deadline:
        ids = {v["eventId"] for *_, v in read_out(out)}
        if len(ids) >= 5_000:
            break
        time.sleep(0.5)
    assert len(ids) == 5_000, f"{5_000 - len(ids)} events lost"
    assert healthy.stop() == 0


def test_a_forced_stop_with_records_held_exits_and_the_group_reads_them_again(
        kafka, engines, tmp_path):
    """SIGTERM, the grace period runs out while the sink still holds a batch
    and records are fetched but not dispatched: the engine gives them back
    to librdkafka before destroying the consumer, exits 0 once the sink has
    stopped, and commits nothing it did not write, so a restart reads every
    record not written yet."""
    topic = unique("forced-held")
    create_topic(kafka, topic, 3)
    produce(kafka, topic, records(5_000, 50))
    out = tmp_path / "out.tsv"
    # A forced stop does not leave the group: the restart's join waits for
    # the old member's session to time out.
    kprops = {"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"], "session.timeout.ms": "6000"}
    extra = {"shutdown_grace_ms": 1000}
    eng = engines(kprops, {"p": pipeline("forced-held", topic, scripted(out, hang_ms=4000))},
                  env=ENV, engine_extra=extra).start()
    eng.wait_log("assigned 3 partition(s)")
    time.sleep(1.0)  # batches handed to the hanging sink, the rest fetched
    t0 = time.monotonic()
    assert eng.stop(timeout=30) == 0, eng.logs()[-3000:]
    took = time.monotonic() - t0
    assert took < 20, f"stop took {took:.1f}s"
    written = {v["eventId"] for *_, v in read_out(out)}
    assert len(written) < 5_000
    # The rest comes on restart, from what was committed.
    eng2 = engines(kprops, {"p": pipeline("forced-held", topic, scripted(out))},
                   env=ENV).start()
    assert wait_for_lines(out, 5_000, proc=eng2.proc, timeout=120) >= 5_000
    lines = read_out(out)
    assert {v["eventId"] for *_, v in lines} == {f"e-{i}" for i in range(5_000)}
    assert eng2.stop() == 0


def test_a_second_sigterm_during_a_backlog_stops_at_once(kafka, engines, tmp_path):
    """A second SIGTERM stops without waiting: the engine must still exit
    (before, destroying the consumer with fetched records held never
    returned), and a restart still delivers everything."""
    topic = unique("double-term")
    create_topic(kafka, topic, 3)
    produce(kafka, topic, records(20_000, 100))
    out = tmp_path / "out.tsv"
    # A forced stop does not leave the group: the restart's join waits for
    # the old member's session to time out.
    kprops = {"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"], "session.timeout.ms": "6000"}
    eng = engines(kprops, {"p": pipeline("double-term", topic, scripted(out, hang_ms=2000))},
                  env=ENV).start()
    eng.wait_log("assigned 3 partition(s)")
    time.sleep(1.0)  # batches in the sink (answered after 2 s), the rest fetched
    eng.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)  # draining: the sink still holds its batches
    assert eng.stop(timeout=20) == 0, eng.logs()[-3000:]
    assert "stopping now without waiting" in eng.logs()
    eng2 = engines(kprops, {"p": pipeline("double-term", topic, scripted(out))},
                   env=ENV).start()
    assert wait_for_lines(out, 20_000, proc=eng2.proc, timeout=120) >= 20_000
    assert {v["eventId"] for *_, v in read_out(out)} == {f"e-{i}" for i in range(20_000)}
    assert eng2.stop() == 0


def test_when_is_applied_to_records_held_behind_a_retried_key(kafka, engines, tmp_path):
    """A record its sink's `when` filters out never reaches the sink, even
    when it arrives while an earlier record of its key waits for a retry
    (it used to be held behind the key and then sent from the held set
    without its `when` being looked at)."""
    topic = unique("when-held")
    create_topic(kafka, topic, 1)
    out = tmp_path / "out.tsv"

    def rec(i, typ, key="cust-k"):
        return key, json.dumps({"eventId": f"e-{i}", "type": typ, "seq": i}).encode()

    sink = scripted(out, fail_key="cust-k", fail_key_times=2,
                    when={"path": "/type", "eq": "A"})
    # The key stays held 2 x 4 s: long enough for the second produce to land
    # behind it on a loaded machine.
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]},
                  {"p": pipeline("when-held", topic, sink, group_id=f"g-{topic}",
                                 retry={"initial_ms": 4000, "max_ms": 4000, "max_attempts": 10})},
                  env=ENV).start()
    eng.wait_log("assigned 1 partition(s)")
    produce(kafka, topic, [rec(0, "A")])
    eng.wait_log("retry 1 of key")
    # The key is held now: these arrive behind it.
    produce(kafka, topic, [rec(1, "B"), rec(2, "A"), rec(3, "B"), rec(4, "A", key="cust-z")])
    assert wait_for_lines(out, 3, proc=eng.proc, timeout=60) >= 3, eng.logs()[-3000:]
    time.sleep(1.0)  # a filtered record sent by mistake would show up now
    lines = read_out(out)
    assert sorted(v["seq"] for *_, v in lines) == [0, 2, 4], lines
    assert [v["seq"] for k, *_, v in lines if k == "cust-k"] == [0, 2]
    assert eng.stop() == 0
    assert committed_offsets(kafka, f"g-{topic}", topic) == {0: 5}


def test_a_partition_paused_over_its_mark_resumes_when_dead_letters_drain_it(
        kafka, engines, tmp_path):
    """Records that leave a partition's window through the dead-letter topic
    (no batch completes for them) must still let the partition resume: a
    burst of non-JSON values over max_inflight_records used to leave it
    paused for good."""
    topic = unique("dlq-pause")
    dlq = topic + ".dlq"
    create_topic(kafka, topic, 1)
    create_topic(kafka, dlq, 1)
    produce(kafka, topic, [("bad", b"not json %d" % i) for i in range(3000)])
    produce(kafka, topic, records(10, 5))
    out = tmp_path / "out.tsv"
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]},
                  {"p": pipeline("dlq-pause", topic, scripted(out), max_inflight_records=50,
                                 pause_after_ms=100, group_id=f"g-{topic}",
                                 errors={"tolerance": "all", "dead_letter_topic": dlq})},
                  env=ENV).start()
    assert wait_for_lines(out, 10, proc=eng.proc, timeout=30) == 10, eng.logs()[-3000:]
    assert len(consume_all(kafka, dlq, expect=3000).splitlines()) == 3000
    assert eng.stop() == 0
    assert committed_offsets(kafka, f"g-{topic}", topic) == {0: 3010}


def test_a_dead_letter_ack_after_a_forced_stop_touches_nothing_freed(kafka, engines, tmp_path):
    """A forced stop frees the records it holds while a dead-letter produce
    is still in flight (here: waiting for its topic to exist). The delivery
    report that comes later, while the engine flushes its producer, must not
    touch the freed record or its partition. (Before, it marked and acked a
    record already returned to the engine's free list: no crash, and nothing
    AddressSanitizer sees; the debug line says the report was only
    forgotten.)"""
    topic = unique("dlq-late")
    dlq = topic + ".dlq"
    create_topic(kafka, topic, 1)
    produce(kafka, topic, records(20, 5))
    out = tmp_path / "out.tsv"
    kprops = {"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"], "allow.auto.create.topics": "false",
              "topic.metadata.refresh.interval.ms": "300",
              "topic.metadata.propagation.max.ms": "60000", "session.timeout.ms": "6000"}
    eng = engines(kprops, {"p": pipeline("dlq-late", topic, scripted(out, fatal_offset=5),
                                         group_id=f"g-{topic}",
                                         errors={"tolerance": "all", "dead_letter_topic": dlq})},
                  env=ENV,
                  engine_extra={"shutdown_grace_ms": 8000, "log_level": "debug"}).start()
    eng.wait_log(f"record {topic}[0]@5 failed: scripted fatal, dead-lettered")
    assert wait_for_lines(out, 19, proc=eng.proc, timeout=30) == 19
    eng.proc.send_signal(signal.SIGTERM)
    eng.wait_log("draining")
    eng.proc.send_signal(signal.SIGTERM)
    eng.wait_log("stopping now without waiting")
    create_topic(kafka, dlq, 1)  # the produce goes through while the engine flushes
    assert eng.proc.wait(timeout=30) == 0, eng.logs()[-3000:]
    assert "AddressSanitizer" not in eng.logs()
    assert "dead-letter delivery report (stored) after its record was released" in eng.logs()
    # The dead letter is in its topic (from the flush), and offset 5 was
    # not committed past: a restart dead-letters it again at worst.
    assert len(consume_all(kafka, dlq, expect=1).splitlines()) >= 1
    assert committed_offsets(kafka, f"g-{topic}", topic).get(0, 0) <= 5
