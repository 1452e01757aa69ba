"""The engine with a sink-file pipeline against the real broker: every event
arrives, per-key order holds, SIGKILL loses nothing, SIGTERM commits, and our
commits are what an independent client sees."""
import json
import signal
import time
from collections import defaultdict

from conftest import (committed_offsets, consume_all, create_topic, produce, read_ndjson, unique,
                      wait_for_lines)

N_EVENTS = 50_000
N_KEYS = 200


def events(n, keys, start=0):
    for i in range(start, start + n):
        cust = f"cust-{i % keys:03d}"
        seq = i // keys
        value = json.dumps({"eventId": f"e-{i}", "customerId": cust, "seq": seq,
                            "data": {"step": "user-info-submitted", "n": i}},
                           separators=(",", ":")).encode()
        yield cust, value


def file_pipeline(name, topic, out, **extra):
    p = {"name": name, "topics": [topic],
         "sinks": [{"plugin": "file", "path": str(out / "${topic}.ndjson")}]}
    p.update(extra)
    return p


def check_order_and_completeness(lines, n, keys, allow_duplicates=False):
    seen = defaultdict(list)
    for rec in lines:
        v = rec["value"]
        assert rec["key"] == v["customerId"]
        seen[v["customerId"]].append(v["seq"])
    total = set()
    for cust, seqs in seen.items():
        if not allow_duplicates:
            assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)), \
                f"{cust}: order broken: {seqs[:20]}"
        for s in seqs:
            total.add((cust, s))
    expected = {(f"cust-{i % keys:03d}", i // keys) for i in range(n)}
    missing = expected - total
    assert not missing, f"{len(missing)} events missing, e.g. {sorted(missing)[:5]}"


def test_50k_events_from_kcat_arrive_in_per_key_order(kafka, engines, tmp_path):
    topic = unique("user-info-submitted")
    create_topic(kafka, topic, 3)
    produce(kafka, topic, events(N_EVENTS, N_KEYS))
    out = tmp_path / "out"
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]},
                  {"p": file_pipeline("onboarding", topic, out)}).start()
    path = out / f"{topic}.ndjson"
    got = wait_for_lines(path, N_EVENTS, timeout=120, proc=eng.proc)
    assert got == N_EVENTS, f"only {got} of {N_EVENTS} lines:\n{eng.logs()[-3000:]}"
    lines = read_ndjson(path)
    check_order_and_completeness(lines, N_EVENTS, N_KEYS)
    r = lines[0]
    assert set(r) >= {"topic", "partition", "offset", "key", "timestamp", "headers", "value"}
    assert r["topic"] == topic and isinstance(r["timestamp"], int)
    # Offsets per partition are contiguous and increasing in the file.
    per_part = defaultdict(list)
    for rec in lines:
        per_part[rec["partition"]].append(rec["offset"])
    for p, offs in per_part.items():
        assert offs == list(range(len(offs))), f"partition {p} offsets not contiguous"
    assert eng.stop() == 0
    # After a clean stop our commits cover everything written.
    committed = committed_offsets(kafka, "connectd.onboarding", topic)
    assert committed == {p: len(offs) for p, offs in per_part.items()}, committed


def test_sigkill_mid_stream_then_restart_loses_nothing(kafka, engines, tmp_path):
    topic = unique("documents-processed")
    create_topic(kafka, topic, 3)
    produce(kafka, topic, events(N_EVENTS, N_KEYS))
    out = tmp_path / "out"
    # fsync per small batch slows the sink down enough to be killed mid-stream.
    pipeline = file_pipeline("kill-test", topic, out, batch={"max_records": 20, "linger_ms": 1})
    pipeline["sinks"][0]["fsync"] = "batch"
    # A SIGKILLed member stays in the group until its session times out:
    # keep that short so the restart is assigned partitions quickly.
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"], "session.timeout.ms": 6000},
                  {"p": pipeline}, engine_extra={"commit_interval_ms": 50})
    eng.start()
    path = out / f"{topic}.ndjson"
    got = wait_for_lines(path, 2_000, timeout=60, proc=eng.proc)
    assert got >= 2_000
    eng.kill()  # SIGKILL: no drain, no final commit
    before = wait_for_lines(path, 0)
    assert before < N_EVENTS, "killed too late to prove anything; raise N_EVENTS"
    eng.start()
    lines = []
    deadline = time.time() + 120
    while time.time() < deadline:
        lines = read_ndjson(path)
        distinct = {(l["partition"], l["offset"]) for l in lines}
        if len(distinct) >= N_EVENTS:
            break
        time.sleep(0.5)
    check_order_and_completeness(lines, N_EVENTS, N_KEYS, allow_duplicates=True)
    assert eng.stop() == 0
    committed = committed_offsets(kafka, "connectd.kill-test", topic)
    highest = defaultdict(int)
    for l in lines:
        highest[l["partition"]] = max(highest[l["partition"]], l["offset"] + 1)
    assert committed == dict(highest)


def test_kcat_in_the_group_reads_nothing_already_delivered(kafka, engines, tmp_path):
    topic = unique("kyc-verified")
    create_topic(kafka, topic, 3)
    produce(kafka, topic, events(1_000, 50))
    out = tmp_path / "out"
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]},
                  {"p": file_pipeline("kyc", topic, out)}).start()
    assert wait_for_lines(out / f"{topic}.ndjson", 1_000, proc=eng.proc) == 1_000
    assert eng.stop() == 0
    # Ten more events arrive after the stop; an independent consumer in our
    # group must see exactly those and nothing already delivered.
    produce(kafka, topic, events(10, 50, start=1_000))
    p = consume_group(kafka, "connectd.kyc", topic, expect=10)
    seen = sorted(json.loads(v)["eventId"] for v in p)
    assert seen == sorted(f"e-{i}" for i in range(1_000, 1_010))


def consume_group(kafka, group, topic, expect, timeout=60):
    """kcat as a balanced consumer in `group`, starting from its committed
    offsets; returns the values it read (until `expect` arrived and the end
    was reached, or the timeout)."""
    import subprocess
    proc = subprocess.Popen(["kcat", "-b", kafka["KAFKA_BOOTSTRAP"], "-G", group, "-q", "-u",
                             "-X", "auto.offset.reset=earliest", "-X", "enable.auto.commit=false",
                             "-f", "%s\n", topic], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    values = []
    deadline = time.time() + timeout
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    quiet_until = None
    while time.time() < deadline:
        if sel.select(timeout=0.5):
            chunk = proc.stdout.read1(65536)
            if not chunk:
                break
            buf += chunk
            *done, buf = buf.split(b"\n")
            values.extend(d.decode() for d in done if d)
        if len(values) >= expect and quiet_until is None:
            quiet_until = time.time() + 3  # anything extra would show up now
        if quiet_until and time.time() > quiet_until:
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=30)
    values.extend(d.decode() for d in (buf + rest).split(b"\n") if d)
    return values


def test_sigterm_exits_zero_within_grace_with_offsets_committed(kafka, engines, tmp_path):
    topic = unique("policy-recommended")
    create_topic(kafka, topic, 3)
    produce(kafka, topic, events(30_000, 100))
    out = tmp_path / "out"
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]},
                  {"p": file_pipeline("policy", topic, out,
                                      batch={"max_records": 100, "linger_ms": 1})},
                  engine_extra={"shutdown_grace_ms": 5000, "commit_interval_ms": 60000})
    eng.start()
    path = out / f"{topic}.ndjson"
    assert wait_for_lines(path, 2_000, proc=eng.proc) >= 2_000
    t0 = time.time()
    rc = eng.stop(signal.SIGTERM, timeout=15)
    elapsed = time.time() - t0
    assert rc == 0, eng.logs()[-3000:]
    assert elapsed < 5 + 2, f"took {elapsed:.1f}s"
    lines = read_ndjson(path)
    written = defaultdict(set)
    for l in lines:
        written[l["partition"]].add(l["offset"])
    committed = committed_offsets(kafka, "connectd.policy", topic)
    # The periodic commit is off (60 s): only the shutdown commit can have
    # stored these, and it must cover exactly the contiguous written prefix.
    for p in range(3):
        expect = 0
        while expect in written[p]:
            expect += 1
        got = committed.get(p, -1)
        assert got == expect or (expect == 0 and got == -1), (p, committed, expect)


import pytest


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_rebalance_loses_nothing_and_no_process_writes_a_record_twice(
        kafka, engines, tmp_path, strategy):
    """A second engine joins the group mid-stream (eager or cooperative
    rebalance), then the first leaves: every event is delivered, and neither
    process hands the same record to its sink twice."""
    topic = unique("rebalance")
    create_topic(kafka, topic, 6)
    total, chunk = 40_000, 1_000
    props = {"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"],
             "partition.assignment.strategy": strategy, "session.timeout.ms": 6000}
    outs = [tmp_path / "a", tmp_path / "b"]
    group = f"rb-{strategy}"

    def pipeline(out):
        return file_pipeline(group, topic, out, batch={"max_records": 100, "linger_ms": 1})

    # Events keep arriving (1,000 every 150 ms) while the group changes.
    import threading

    def producer():
        for start in range(0, total, chunk):
            produce(kafka, topic, events(chunk, N_KEYS, start=start))
            time.sleep(0.15)

    feeder = threading.Thread(target=producer)
    feeder.start()
    a = engines(props, {"p": pipeline(outs[0])}).start()
    assert wait_for_lines(outs[0] / f"{topic}.ndjson", 2_000, proc=a.proc) >= 2_000
    b = engines(props, {"p": pipeline(outs[1])}).start()
    b.wait_log("assigned", timeout=60)
    time.sleep(1.5)
    assert a.stop() == 0  # a leaves: b takes everything over
    feeder.join()
    deadline = time.time() + 120
    while time.time() < deadline:
        seen = set()
        for out in outs:
            path = out / f"{topic}.ndjson"
            if path.exists():
                seen |= {(r["partition"], r["offset"]) for r in read_ndjson(path)}
        if len(seen) >= total:
            break
        time.sleep(0.5)
    assert b.stop() == 0
    all_lines = []
    for out in outs:
        lines = read_ndjson(out / f"{topic}.ndjson")
        keys = [(r["partition"], r["offset"]) for r in lines]
        assert len(keys) == len(set(keys)), f"{out.name} wrote a record twice"
        all_lines += lines
    check_order_and_completeness(all_lines, total, N_KEYS, allow_duplicates=True)
    assert "revoked" in a.logs()
    assert all((out / f"{topic}.ndjson").exists() for out in outs), "both took part"
