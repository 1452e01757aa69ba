#!/usr/bin/env python3
"""connectd benchmark driver (make bench -> bench/run -> here).

Produces one data set into a fresh topic of the local Apache Kafka broker, then
runs every scenario beside its reference in the same invocation, several times
interleaved, and prints one table (also written to bench/results/latest.json).
Only ratios measured side by side mean anything on a shared, noisy machine.

Every count is checked; a mismatch is an error (exit status 1).

Environment:
  KAFKA_BOOTSTRAP   the broker (bench/run sources build/stack/kafka.env)
  BUILD_DIR         where connectd was built (default: build)
  BENCH_SCALE       scales record counts (default 1.0 = 200,000 records)
  BENCH_REPEAT      runs of each scenario and reference, interleaved (default 3)
  BENCH_KEEP        1: keep the work directories (configs, logs, output files)
  BENCH_ENGINE_CONFIG  a JSON object merged into the engine config, e.g.
                    '{"kafka": {"fetch.wait.max.ms": "10"}}' (for experiments;
                    the overrides are printed and recorded in latest.json)
  BENCH_FILE_PIPELINE  a JSON object merged into the sink-file pipeline, e.g.
                    '{"max_inflight_records": 100000}'
  BENCH_SCRIPTED_PIPELINE  the same for both scripted-sink pipelines, e.g.
                    '{"retry": {"initial_ms": 50}}'
  BENCH_PERF        1: also run the engine once under `perf record` (DWARF call
                    graphs) and write bench/results/perf-file.txt (that run
                    is not part of the table)
  BENCH_ONLY        comma-separated subset of consume,dynamodb,ingest,sns,idle,e2e
                    (default: all)
  REDIS_URL         the redis-server of the idle and e2e groups (bench/run
                    sources build/stack/redis.env)
  BENCH_DDB_PIPELINE   a JSON object merged into the sink-dynamodb pipeline
  BENCH_E2E_ROWS    comma-separated subset of the e2e group's rows: node (the
                    reference), rate-redis, rate-local, wide-redis, wide-local
                    (default: all; without node no ratio to the reference)
  BENCH_E2E_PIPELINE   a JSON object merged into the end-to-end scenario's
                    websocket pipeline, e.g. '{"batch": {"linger_ms": 0}}'
  BENCH_HTTP_PIPELINE  a JSON object merged into the source-http pipeline, e.g.
                    '{"source": {"max_connections": 1000}}'
  BENCH_IGNORE_SIGPIPE  1: start the engine with SIGPIPE ignored (connectd
                    ignores it itself since 15268dd; for measuring older builds)
"""
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
BUILD = Path(os.environ.get("BUILD_DIR", ROOT / "build"))
if not BUILD.is_absolute():
    BUILD = ROOT / BUILD
CONNECTD = BUILD / "connectd"

BASE_RECORDS = 200_000
KEYS = 1_000
PARTITIONS = 3
VALUE_BYTES = 300
POLL_S = 0.01
STALL_S = 60.0  # no progress for this long is an error
# connectd does not ignore SIGPIPE (found by the HTTP ingest scenarios): 1 runs
# it with SIGPIPE ignored (inherited from this process), and says so.
IGNORE_SIGPIPE = os.environ.get("BENCH_IGNORE_SIGPIPE") == "1"


class BenchError(Exception):
    pass


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def env_float(name, default):
    v = os.environ.get(name)
    if v in (None, ""):
        return default
    try:
        return float(v)
    except ValueError:
        raise BenchError(f"{name}={v!r} is not a number")


# --------------------------------------------------------------------------- data

EVENT_TYPES = ["user-info-submitted", "documents-processed", "kyc-verified",
               "policy-recommended", "workflow-completed", "workflow-errors"]
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson"]
COUNTRIES = ["GB", "DE", "FR", "NL", "IE", "ES", "IT", "SE"]
RISK = ["LOW", "LOW", "LOW", "MEDIUM", "HIGH"]
FILLER = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/124.0.0.0 Safari/537.36 onboarding-web/3.14.1 " * 4)


def make_events(n, keys, run_id, seed=20240501):
    """n onboarding-like JSON events of VALUE_BYTES bytes each (±1), keyed by
    customerId over `keys` customers. Yields (key, value bytes, eventId)."""
    rng = random.Random(seed)
    base_ms = 1714564800000  # 2024-05-01T12:00:00Z
    for i in range(n):
        cust = f"cust-{rng.randrange(keys):04d}"
        etype = EVENT_TYPES[i % len(EVENT_TYPES)]
        ts = base_ms + i * 7
        event_id = f"evt-{run_id}-{i:08d}"
        doc = {
            "eventId": event_id,
            "eventType": etype,
            "customerId": cust,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts // 1000))
                         + f".{ts % 1000:03d}Z",
            "data": {
                "step": etype,
                "firstName": FIRST[i % len(FIRST)],
                "lastName": LAST[(i // 8) % len(LAST)],
                "country": COUNTRIES[i % len(COUNTRIES)],
                "riskLevel": RISK[i % len(RISK)],
                "score": round(rng.random(), 3),
                "userAgent": "",
            },
        }
        raw = json.dumps(doc, separators=(",", ":"))
        pad = max(0, VALUE_BYTES - len(raw))
        doc["data"]["userAgent"] = FILLER[:pad]
        yield cust, json.dumps(doc, separators=(",", ":")).encode(), event_id


def topic_admin(bootstrap, *args):
    """scripts/kafka-admin.js (kafkajs): create / delete / list topics. Returns an error
    text, or None on success."""
    if not shutil.which("node"):
        return "node not found"
    p = subprocess.run(["node", str(BENCH.parent / "scripts" / "kafka-admin.js"), *map(str, args)],
                       capture_output=True, timeout=120,
                       env=dict(os.environ, KAFKA_BOOTSTRAP=bootstrap))
    return None if p.returncode == 0 else (p.stderr.decode(errors="replace").strip() or "failed")


def create_topic(bootstrap, topic):
    err = topic_admin(bootstrap, "create-topic", topic, PARTITIONS)
    if err:
        log(f"creating {topic} failed ({err}); relying on auto-creation (num.partitions=3)")


def topic_partitions(bootstrap, topic):
    p = subprocess.run(["kcat", "-b", bootstrap, "-L", "-J", "-t", topic], capture_output=True,
                       timeout=60)
    if p.returncode != 0:
        raise BenchError(f"kcat -L {topic}: {p.stderr.decode(errors='replace')}")
    md = json.loads(p.stdout)
    for t in md.get("topics", []):
        if t.get("topic") == topic:
            return len(t.get("partitions", []))
    return 0


def produce(bootstrap, topic, n, run_id, workdir):
    """Writes the data set with kcat (key and value separated by 0x1f). Returns
    the list of eventIds and the mean value size. Not measured."""
    data = workdir / "records.txt"
    ids = []
    vbytes = 0
    with open(data, "wb") as f:
        for key, value, eid in make_events(n, KEYS, run_id):
            f.write(key.encode() + b"\x1f" + value + b"\n")
            ids.append(eid)
            vbytes += len(value)
    t0 = time.monotonic()
    with open(data, "rb") as f:
        p = subprocess.run(["kcat", "-P", "-b", bootstrap, "-t", topic, "-K", "\x1f",
                            "-X", "linger.ms=20", "-X", "batch.num.messages=10000",
                            "-X", "queue.buffering.max.messages=1000000",
                            "-X", "queue.buffering.max.kbytes=1048576"],
                           stdin=f, capture_output=True, timeout=600)
    if p.returncode != 0:
        raise BenchError(f"kcat produce failed: {p.stderr.decode(errors='replace')}")
    log(f"produced {n} records ({vbytes / max(n, 1):.0f} B values) in "
        f"{time.monotonic() - t0:.1f}s")
    data.unlink()
    return ids, vbytes / max(n, 1)


# --------------------------------------------------------------------------- process measurement

class Usage:
    """What bench-rusage reported for one process."""

    def __init__(self, text):
        f = dict(kv.split("=", 1) for kv in text.split())
        self.pid = int(f["pid"])
        self.status = int(f["status"])
        self.ru_utime = int(f["utime_us"]) / 1e6
        self.ru_stime = int(f["stime_us"]) / 1e6
        self.ru_maxrss = int(f["maxrss_kb"])


def rusage_helper():
    """build/bench/bench-rusage (built by CMake with the rest); compiled here
    with cc when it is missing or older than its source."""
    return helper("bench-rusage", "rusage.c")


def helper(name, source, libs=()):
    """build/bench/<name> from bench/<source>, compiled with cc when it is
    missing or older than its source (CMake builds it too)."""
    exe = BUILD / "bench" / name
    src = BENCH / source
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        exe.parent.mkdir(parents=True, exist_ok=True)
        p = subprocess.run(["cc", "-O2", "-std=c11", "-D_GNU_SOURCE", "-o", str(exe), str(src),
                            *libs], capture_output=True, text=True)
        if p.returncode != 0:
            raise BenchError(f"cannot build {exe}: {p.stderr}")
    return exe


def measured(cmd, rufile):
    """cmd run under bench-rusage, which writes the command's own rusage to rufile."""
    return [str(rusage_helper()), str(rufile)] + [str(c) for c in cmd]


def read_usage(proc, rufile):
    """Reaps the bench-rusage process and returns the measured command's Usage."""
    proc.wait()
    try:
        return Usage(Path(rufile).read_text())
    except (OSError, KeyError, ValueError) as e:
        raise BenchError(f"bench-rusage left no usable report in {rufile} "
                         f"(exit {proc.returncode}): {e}")


def child_of(pid):
    """The first child of pid (bench-rusage's command), or None."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = f.read().split()
        return int(kids[0]) if kids else None
    except (OSError, ValueError):
        return None


def proc_cpu_s(pid):
    """user+sys CPU seconds of a live process so far (clock-tick resolution)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def result(name, n, wall_s, ru, first_s=None, extra=None):
    cpu = ru.ru_utime + ru.ru_stime
    r = {
        "scenario": name,
        "records": n,
        "wall_s": wall_s,
        "records_per_s": n / wall_s if wall_s > 0 else None,
        "cpu_s": cpu,
        "cpu_user_s": ru.ru_utime,
        "cpu_sys_s": ru.ru_stime,
        "cpu_us_per_record": cpu * 1e6 / n if n else None,
        "peak_rss_mib": ru.ru_maxrss / 1024.0,
        "first_record_s": first_s,
        # Rate from the first record to the last: start-up (group join, offset
        # fetch) left out. Informational; the table's records/s includes it.
        "records_per_s_after_first": (n - 1) / (wall_s - first_s)
        if first_s is not None and wall_s > first_s and n > 1 else None,
    }
    r.update(extra or {})
    return r


# --------------------------------------------------------------------------- reference: kcat

def run_kcat(bootstrap, topic, n, workroot, group=None):
    """kcat's raw consume of the whole topic: one '.' per record on a pipe (so
    the count is exact and output costs next to nothing), exit after the last
    record. Wall time is fork to exit; CPU and RSS from wait4."""
    # -c N: exit at the N-th record. -e alone would add the broker's wait for
    # more data at the end of the partitions (fetch.wait.max.ms, 500 ms) to
    # every run; -e stays so that a short topic ends the run instead of hanging.
    if group:
        # The balanced consumer: joins a fresh group first, as the engine does.
        args = ["kcat", "-b", bootstrap, "-G", group, "-X", "auto.offset.reset=earliest",
                "-e", "-q", "-c", str(n), "-f", ".", topic]
    else:
        args = ["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q",
                "-c", str(n), "-f", "."]
    rufile = Path(tempfile.mkstemp(prefix="kcat-", suffix=".rusage", dir=workroot)[1])
    t0 = time.monotonic()
    proc = subprocess.Popen(measured(args, rufile), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    got = 0
    first = None
    fd = proc.stdout.fileno()
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        if first is None:
            first = time.monotonic() - t0
        got += len(chunk)
    ru = read_usage(proc, rufile)
    wall = time.monotonic() - t0
    rc = ru.status
    rufile.unlink()
    err = proc.stderr.read().decode(errors="replace")
    proc.stdout.close()
    proc.stderr.close()
    if rc != 0:
        raise BenchError(f"kcat consume exited {rc}: {err}")
    if got != n:
        raise BenchError(f"kcat consumed {got} records, expected {n}")
    name = "kcat -G group consume" if group else "kcat raw consume (reference)"
    return result(name, n, wall, ru, first)


# ------------------------------------------------------------------- scenario: engine -> sink-file

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, nbytes=4000):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - nbytes))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def verify_file_output(path, topic, n, ids):
    """Every line parses, every eventId arrives exactly once, key matches the
    value's customerId, and (partition, offset) never repeats."""
    want = set(ids)
    seen = set()
    offsets = set()
    lines = 0
    with open(path, "rb") as f:
        for line in f:
            lines += 1
            try:
                rec = json.loads(line)
            except ValueError:
                raise BenchError(f"{path}:{lines}: line is not JSON: {line[:200]!r}")
            v = rec.get("value") or {}
            eid = v.get("eventId")
            if eid not in want:
                raise BenchError(f"{path}:{lines}: unexpected eventId {eid!r}")
            if eid in seen:
                raise BenchError(f"{path}:{lines}: eventId {eid} written twice")
            seen.add(eid)
            if rec.get("topic") != topic or rec.get("key") != v.get("customerId"):
                raise BenchError(f"{path}:{lines}: topic/key mismatch: {line[:200]!r}")
            po = (rec.get("partition"), rec.get("offset"))
            if po in offsets:
                raise BenchError(f"{path}:{lines}: partition/offset {po} written twice")
            offsets.add(po)
    if lines != n or len(seen) != n:
        missing = sorted(want - seen)
        raise BenchError(f"{path}: {lines} lines, {len(seen)} distinct events, expected {n}; "
                         f"missing e.g. {missing[:5]}")


def merge(base, extra):
    """base updated with extra, nested objects merged (for the BENCH_* overrides)."""
    out = dict(base)
    for k, v in (extra or {}).items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def env_json(name):
    v = os.environ.get(name)
    if not v:
        return {}
    try:
        obj = json.loads(v)
    except ValueError as e:
        raise BenchError(f"{name}: not JSON: {e}")
    if not isinstance(obj, dict):
        raise BenchError(f"{name}: expected a JSON object")
    return obj


class Engine:
    """One connectd process under bench-rusage, with its own config directory
    (engine config + pipeline files), log and admin port."""

    def __init__(self, work, cfg, pipelines, perf=None, env=None):
        self.work = work
        self.env = env
        self.cfg_path = work / "connectd.json"
        self.cfg_path.write_text(json.dumps(cfg, indent=2))
        for fname, body in pipelines.items():
            (work / f"{fname}.json").write_text(json.dumps(body, indent=2))
        self.log = work / "connectd.log"
        self.rufile = work / "connectd.rusage"
        self.perf = perf
        self.proc = None

    def start(self):
        cmd = [CONNECTD, "run", "-c", self.cfg_path]
        if self.perf:
            cmd = ["perf", "record", "--call-graph", "dwarf,16384", "-F", "1999", "-q",
                   "-o", self.perf, "--"] + cmd
        with open(self.log, "wb") as logf:
            self.t0_wall = time.time()
            self.t0 = time.monotonic()
            # Python ignores SIGPIPE; with restore_signals=False the engine
            # inherits that (BENCH_IGNORE_SIGPIPE=1, see bench/README.md).
            self.proc = subprocess.Popen(measured(cmd, self.rufile), stdout=logf,
                                         stderr=subprocess.STDOUT, cwd=self.work,
                                         env=self.env, restore_signals=not IGNORE_SIGPIPE)
        return self

    def elapsed(self):
        return time.monotonic() - self.t0

    def pid(self):
        """The connectd process (below bench-rusage, and perf if profiling)."""
        pid = child_of(self.proc.pid)
        if pid and self.perf:
            pid = child_of(pid)
        return pid

    def check_alive(self, what):
        if self.proc.poll() is not None:
            if self.proc.returncode == 128 + signal.SIGPIPE:
                raise BenchError(f"connectd was killed by SIGPIPE {what} (it wrote to a "
                                 f"connection its client had closed; BENCH_IGNORE_SIGPIPE=1 runs "
                                 f"it with SIGPIPE ignored), work dir {self.work}")
            raise BenchError(f"connectd exited ({self.proc.returncode}) {what}:\n{self.tail()}")

    def tail(self):
        return tail(self.log)

    def stop(self, timeout=30):
        """SIGTERM (bench-rusage forwards it), wait for exit; returns the
        engine's Usage and the seconds shutdown took. Exit status must be 0."""
        t = time.monotonic()
        if self.perf:
            pid = self.pid()  # signal the engine, not perf: perf then exits with it
            if pid:
                os.kill(pid, signal.SIGTERM)
        else:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BenchError(f"connectd did not exit within {timeout}s of SIGTERM:\n"
                             f"{self.tail()}")
        usage = read_usage(self.proc, self.rufile)
        if usage.status == 128 + signal.SIGPIPE:
            raise BenchError(f"connectd was killed by SIGPIPE (it wrote to a connection its client "
                             f"had closed; BENCH_IGNORE_SIGPIPE=1 runs it with SIGPIPE ignored), "
                             f"work dir {self.work}:\n{self.tail()}")
        if usage.status != 0:
            raise BenchError(f"connectd exited {usage.status} after SIGTERM:\n{self.tail()}")
        return usage, time.monotonic() - t

    def kill(self):
        if self.proc and self.proc.poll() is None:
            pid = self.pid()
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.kill()
            self.proc.wait()


class LineCounter:
    """Counts the lines of a growing file incrementally (reads only new bytes)."""

    def __init__(self, path):
        self.path = path
        self.fh = None
        self.count = 0

    def poll(self):
        if self.fh is None:
            try:
                self.fh = open(self.path, "rb")
            except FileNotFoundError:
                return 0
        new = 0
        while True:
            chunk = self.fh.read(1 << 20)
            if not chunk:
                break
            new += chunk.count(b"\n")
        self.count += new
        return new

    def mtime(self):
        return os.fstat(self.fh.fileno()).st_mtime_ns / 1e9

    def close(self):
        if self.fh:
            self.fh.close()


def engine_config(bootstrap):
    """The engine config every engine scenario uses (plus BENCH_ENGINE_CONFIG)."""
    cfg = {"kafka": {"bootstrap.servers": bootstrap}, "pipelines_dir": ".",
           "log_level": "warn", "commit_interval_ms": 1000, "shutdown_grace_ms": 10000,
           "admin_listen": f"127.0.0.1:{free_port()}"}
    return merge(cfg, env_json("BENCH_ENGINE_CONFIG"))


# The batch settings of every engine scenario (max_records above the engine's 500).
BATCH = {"max_records": 2000, "linger_ms": 5}


def drive_engine(eng, out, n):
    """Runs a started engine until `out` (a LineCounter or RecordTracker)
    counts n records, then stops it with SIGTERM. Returns (first record s,
    last record s, CPU s at the last record, Usage, shutdown s). The last
    record's time is the output's mtime when the count was reached."""
    first = done_at = cpu_at_last = None
    last_progress = time.monotonic()
    try:
        while True:
            if out.poll():
                if first is None:
                    first = eng.elapsed()
                last_progress = time.monotonic()
            if out.count >= n:
                done_at = min(eng.elapsed(), max(out.mtime() - eng.t0_wall, first))
                pid = eng.pid()
                cpu_at_last = proc_cpu_s(pid) if pid else None
                break
            eng.check_alive(f"after {out.count} of {n} records")
            if time.monotonic() - last_progress > STALL_S:
                raise BenchError(f"no progress for {STALL_S:.0f}s at {out.count} of {n} "
                                 f"records:\n{eng.tail()}")
            time.sleep(POLL_S)
        usage, stop_s = eng.stop()
    finally:
        out.close()
        eng.kill()
    return first, done_at, cpu_at_last, usage, stop_s


def run_engine_file(bootstrap, topic, n, ids, workroot, rep, perf=None):
    """The engine with one sink-file pipeline in a fresh consumer group, from
    process start until the output file holds every record; then SIGTERM.
    Wall time: start to the file's last write (its mtime when the count was
    reached); CPU and peak RSS: the whole engine process, over its whole life."""
    work = Path(tempfile.mkdtemp(prefix=f"file-{rep}-", dir=workroot))
    out = work / "out"
    pipeline = {"name": f"bench-file-{uuid.uuid4().hex[:10]}", "topics": [topic],
                "batch": dict(BATCH),
                "sinks": [{"plugin": "file", "path": str(out / "${topic}.ndjson")}]}
    pipeline = merge(pipeline, env_json("BENCH_FILE_PIPELINE"))
    path = out / f"{topic}.ndjson"

    eng = Engine(work, engine_config(bootstrap), {"bench-file": pipeline}, perf=perf).start()
    first, done_at, cpu_at_last, usage, stop_s = drive_engine(eng, LineCounter(path), n)
    verify_file_output(path, topic, n, ids)
    r = result("consume → sink-file", n, done_at, usage, first,
               {"cpu_s_to_last_record": cpu_at_last, "shutdown_s": stop_s,
                "work_dir": str(work)})
    return r, work


# ------------------------------------------------------------- scenario: engine -> scripted sink

SCRIPTED_RETRY = {"initial_ms": 5, "max_ms": 100, "max_attempts": 1000}
RETRY_LOG = re.compile(rb"; retry (\d+) of key in -?\d+ ms")


def fixtures_dir():
    """Where the test build puts the scripted sink (tests/fixtures/scripted_sink.c)."""
    d = BUILD / "tests" / "fixtures"
    if not (d / "scripted_sink.so").exists():
        raise BenchError(f"{d / 'scripted_sink.so'} not built: the scripted-sink scenarios need "
                         f"the test fixtures (CMake option CONNECTD_TESTS=ON, the default)")
    return d


class RecordTracker:
    """Follows the scripted sink's growing output ("key\tpartition\toffset\tvalue"
    lines), reading only new bytes: count is the number of distinct
    (partition, offset) pairs seen, lines the number of lines."""

    def __init__(self, path):
        self.path = path
        self.fh = None
        self.rest = b""
        self.lines = 0
        self.seen = set()

    @property
    def count(self):
        return len(self.seen)

    def poll(self):
        if self.fh is None:
            try:
                self.fh = open(self.path, "rb")
            except FileNotFoundError:
                return 0
        new = 0
        while True:
            chunk = self.fh.read(1 << 20)
            if not chunk:
                break
            parts = (self.rest + chunk).split(b"\n")
            self.rest = parts.pop()  # a line not finished yet
            for line in parts:
                f = line.split(b"\t", 3)
                if len(f) != 4:
                    raise BenchError(f"{self.path}:{self.lines + new + 1}: not "
                                     f"key/partition/offset/value: {line[:200]!r}")
                self.seen.add((f[1], f[2]))
                new += 1
        self.lines += new
        return new

    def mtime(self):
        return os.fstat(self.fh.fileno()).st_mtime_ns / 1e9

    def close(self):
        if self.fh:
            self.fh.close()


def verify_scripted_output(path, topic, n, ids):
    """Every line parses, its key is the value's customerId, every eventId is
    one that was produced, the distinct eventIds are exactly the N produced
    (none missing), and each (partition, offset) always carries the same
    eventId. Per-key order: the lines of each key stay in one partition and
    their offsets strictly increase, line by line (a line repeating an earlier
    (partition, offset) is counted as a duplicate and left out of the order
    check). Also counts the lines written after a higher offset of their
    partition: records that were retried, or held behind a retried record of
    their key while other keys went on (about 0 without failures).
    Duplicates and order violations are returned, not raised, so that
    the run can still report its figures; anything else is an error."""
    want = set(ids)
    seen = {}    # eventId -> (partition, offset) of its first line
    last = {}    # key -> (partition, offset, line number) of its latest first-time line
    dups = 0
    dup_examples = []
    order = 0
    order_examples = []
    top = {}     # partition -> highest offset written so far
    behind = 0   # lines written after a higher offset of their partition
    lines = 0
    with open(path, "rb") as f:
        for line in f:
            lines += 1
            try:
                key, part, off, value = line.rstrip(b"\n").split(b"\t", 3)
                key = key.decode()
                po = (int(part), int(off))
                v = json.loads(value)
            except ValueError:
                raise BenchError(f"{path}:{lines}: not key/partition/offset/JSON value: "
                                 f"{line[:200]!r}")
            eid = v.get("eventId")
            if eid not in want:
                raise BenchError(f"{path}:{lines}: unexpected eventId {eid!r}")
            if key != v.get("customerId"):
                raise BenchError(f"{path}:{lines}: key {key!r} is not the value's customerId "
                                 f"{v.get('customerId')!r}")
            if eid in seen:
                if seen[eid] != po:
                    raise BenchError(f"{path}:{lines}: eventId {eid} at {po}, earlier at "
                                     f"{seen[eid]}")
                dups += 1
                if len(dup_examples) < 5:
                    dup_examples.append(f"line {lines}: {eid} (partition {po[0]}, offset {po[1]})")
                continue
            seen[eid] = po
            if po[1] < top.get(po[0], -1):
                behind += 1
            else:
                top[po[0]] = po[1]
            prev = last.get(key)
            if prev is not None:
                if prev[0] != po[0]:
                    raise BenchError(f"{path}:{lines}: key {key} in partition {po[0]}, but in "
                                     f"partition {prev[0]} at line {prev[2]}")
                if po[1] <= prev[1]:
                    order += 1
                    if len(order_examples) < 5:
                        order_examples.append(f"key {key}: offset {po[1]} at line {lines} after "
                                              f"offset {prev[1]} at line {prev[2]}")
            last[key] = (po[0], po[1], lines)
    if len(seen) != n:
        missing = sorted(want - set(seen))
        raise BenchError(f"{path}: {lines} lines, {len(seen)} distinct events, expected {n}; "
                         f"missing e.g. {missing[:5]}")
    return {"output_lines": lines, "distinct_records": len(seen), "keys_seen": len(last),
            "written_out_of_partition_order": behind,
            "duplicates": dups, "duplicate_examples": dup_examples,
            "order_violations": order, "order_violation_examples": order_examples}


def scripted_name(failure_rate):
    if not failure_rate:
        return "consume → scripted sink, 0% failures"
    return f"consume → scripted sink, {failure_rate:.0%} transient failures"


def run_engine_scripted(bootstrap, topic, n, ids, workroot, rep, failure_rate):
    """The engine with one pipeline into the test-only scripted sink
    (tests/fixtures/scripted_sink.c), which answers RETRY for a random
    `failure_rate` of the records; the engine retries those with backoff and
    holds the later records of their key. Runs until the output holds every
    record (distinct (partition, offset) pairs), then SIGTERM. Measured like
    the sink-file scenario."""
    work = Path(tempfile.mkdtemp(prefix=f"scripted-{failure_rate:g}-{rep}-", dir=workroot))
    path = work / "scripted.tsv"
    pipeline = {"name": f"bench-scripted-{uuid.uuid4().hex[:10]}", "topics": [topic],
                "batch": dict(BATCH), "retry": dict(SCRIPTED_RETRY),
                "sinks": [{"plugin": "test-scripted", "name": "scripted", "output": str(path),
                           "failure_rate": failure_rate}]}
    pipeline = merge(pipeline, env_json("BENCH_SCRIPTED_PIPELINE"))
    env = dict(os.environ)
    env["CONNECTD_PLUGIN_PATH"] = ":".join(
        p for p in (str(fixtures_dir()), os.environ.get("CONNECTD_PLUGIN_PATH")) if p)

    eng = Engine(work, engine_config(bootstrap), {"bench-scripted": pipeline}, env=env).start()
    first, done_at, cpu_at_last, usage, stop_s = drive_engine(eng, RecordTracker(path), n)
    check = verify_scripted_output(path, topic, n, ids)
    # The engine logs each retry of a key at WARN ("...; retry N of key in D ms"):
    # how many retries there were, and the most attempts any key needed.
    retries, most = 0, 0
    with open(eng.log, "rb") as f:
        for line in f:
            m = RETRY_LOG.search(line)
            if m:
                retries += 1
                most = max(most, int(m.group(1)))
    r = result(scripted_name(failure_rate), n, done_at, usage, first,
               {"failure_rate": failure_rate, "retry": pipeline.get("retry"),
                "key_retries_logged": retries, "most_retries_of_a_key": most,
                "cpu_s_to_last_record": cpu_at_last, "shutdown_s": stop_s,
                "work_dir": str(work), **check})
    return r, work


# ------------------------------------------------------------- scenario: HTTP ingest -> Kafka

INGEST_SCHEMA = ROOT / "pipelines" / "schemas" / "kyc-verified.json"
INGEST_EVENTS = 2_000       # distinct events cycled by wrk (over KEYS customers)
INGEST_BODY_BYTES = 300     # each posted event (no eventId: source-http assigns one)
INGEST_CONNECTIONS = 64
INGEST_THREADS = 2
INGEST_PIPELINE_DEPTH = 16
INGEST_NDJSON_BATCH = 100
INGEST_FIXED_RATES = (1_000, 10_000)  # bench-fixedrate (bench/fixedrate.c), requests/s
STATUSES = ["VERIFIED", "VERIFIED", "VERIFIED", "PENDING_REVIEW", "REJECTED", "FAILED"]


def make_ingest_events(n, keys, seed=20240502):
    """n valid kyc-verified events of INGEST_BODY_BYTES bytes, without eventId."""
    rng = random.Random(seed)
    base_ms = 1714564800000
    out = []
    for i in range(n):
        cust = f"cust-{rng.randrange(keys):04d}"
        ts = base_ms + i * 7
        doc = {
            "eventType": "kyc-verified",
            "customerId": cust,
            "applicationId": f"app-{cust[5:]}-{i % 7}",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts // 1000))
                         + f".{ts % 1000:03d}Z",
            "data": {"status": STATUSES[i % len(STATUSES)], "riskLevel": RISK[i % len(RISK)],
                     "score": round(rng.random(), 3),
                     "checks": {"document": "passport", "country": COUNTRIES[i % len(COUNTRIES)],
                                "note": ""}},
        }
        raw = json.dumps(doc, separators=(",", ":"))
        doc["data"]["checks"]["note"] = FILLER[:max(0, INGEST_BODY_BYTES - len(raw))]
        out.append(doc)
    return out


def count_topic(bootstrap, topic, timeout=120):
    """Records in a topic, read back from the beginning with kcat (one '.' each)."""
    p = subprocess.run(["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e",
                        "-q", "-f", "."], capture_output=True, timeout=timeout)
    if p.returncode != 0:
        raise BenchError(f"kcat counting {topic}: {p.stderr.decode(errors='replace')}")
    return len(p.stdout)


def wait_http(port, eng, timeout=30.0):
    """Waits until GET /healthz answers 200."""
    import http.client
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        eng.check_alive("before it listened")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                c.close()
                return
            c.close()
        except OSError:
            pass
        time.sleep(0.05)
    raise BenchError(f"source-http did not answer /healthz on port {port} within "
                     f"{timeout:.0f}s:\n{eng.tail()}")


def post_events(port, topic, events):
    """Sequential keep-alive POSTs (warm-up: connects the producer). Returns the 202 count."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    ok = 0
    for e in events:
        c.request("POST", f"/v1/events/{topic}", body=json.dumps(e, separators=(",", ":")),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        ok += r.status == 202
    c.close()
    return ok


def parse_wrk(text):
    counts, lat = {}, {}
    for line in text.splitlines():
        f = line.split()
        if len(f) == 3 and f[0] == "COUNT":
            counts[f[1]] = int(f[2])
        elif len(f) == 3 and f[0] == "LAT":
            lat[f[1]] = float(f[2])
    if "ev202" not in counts:
        raise BenchError(f"wrk printed no counts:\n{text[-2000:]}")
    return counts, lat


INGEST_NAMES = {
    ("single", 1): "HTTP ingest, 1 event/request",
    ("single", INGEST_PIPELINE_DEPTH): f"HTTP ingest, pipelined ×{INGEST_PIPELINE_DEPTH}",
    ("ndjson", 1): f"HTTP ingest, NDJSON ×{INGEST_NDJSON_BATCH}",
}


def run_http_ingest(bootstrap, workroot, mode, depth, duration, events_file, events, rate=None):
    """The engine with one source-http pipeline into a fresh topic, loaded by wrk
    (keep-alive, INGEST_CONNECTIONS connections) for `duration` seconds.
    Engine CPU over the wrk run from /proc/<pid>/stat deltas. Afterwards every
    event answered 202 (counted by bench/ingest.lua) must be in the topic.
    With `rate`, bench-fixedrate (bench/fixedrate.c) sends one event per
    request at that fixed rate instead, timing each from when it was due."""
    if not rate and not shutil.which("wrk"):
        raise BenchError("wrk not found (scripts/install-deps installs Debian's wrk)")
    tag = uuid.uuid4().hex[:8]
    topic = f"bench-http-{tag}"
    work = Path(tempfile.mkdtemp(prefix=f"http-{mode}-{depth}-", dir=workroot))
    schemas = work / "schemas"
    schemas.mkdir()
    schema = json.loads(INGEST_SCHEMA.read_text())
    schema["title"] = topic
    (schemas / f"{topic}.json").write_text(json.dumps(schema, indent=2))
    create_topic(bootstrap, topic)
    port = free_port()
    pipeline = {"name": f"bench-ingest-{tag}",
                "source": {"plugin": "http", "listen": f"127.0.0.1:{port}", "topics": [topic],
                           "key": "/customerId", "schemas_dir": str(schemas)}}
    pipeline = merge(pipeline, env_json("BENCH_HTTP_PIPELINE"))
    try:
        return _run_http_ingest(bootstrap, topic, work, port, pipeline, mode, depth, duration,
                                events_file, events, rate)
    except BaseException:
        if os.environ.get("BENCH_KEEP") != "1":
            topic_admin(bootstrap, "delete-topic", topic)
        raise


def _run_http_ingest(bootstrap, topic, work, port, pipeline, mode, depth, duration,
                     events_file, events, rate):
    eng = Engine(work, engine_config(bootstrap), {"bench-ingest": pipeline}).start()
    try:
        wait_http(port, eng)
        warm = post_events(port, topic, events[:20])
        if warm != 20:
            raise BenchError(f"warm-up: {warm} of 20 events answered 202:\n{eng.tail()}")
        pid = eng.pid()
        cpu0 = proc_cpu_s(pid)
        if rate:
            cmd = [helper("bench-fixedrate", "fixedrate.c"), "127.0.0.1", str(port),
                   f"/v1/events/{topic}", str(rate), str(duration), str(INGEST_CONNECTIONS),
                   str(events_file)]
        else:
            cmd = ["wrk", "-t", str(INGEST_THREADS), "-c", str(INGEST_CONNECTIONS),
                   "-d", f"{duration}s", "--timeout", "10s", "-s", str(BENCH / "ingest.lua"),
                   f"http://127.0.0.1:{port}/v1/events/{topic}", "--", mode, str(depth),
                   str(events_file), str(INGEST_NDJSON_BATCH)]
        t0 = time.monotonic()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
        wall = time.monotonic() - t0
        cpu1 = proc_cpu_s(pid)
        if p.returncode != 0:
            raise BenchError(f"{Path(cmd[0]).name} exited {p.returncode}: {p.stderr}\n"
                             f"{p.stdout[-2000:]}")
        (work / "wrk.txt").write_text(p.stdout + p.stderr)
        counts, lat = parse_wrk(p.stdout)
        eng.check_alive("during the wrk run")
        usage, stop_s = eng.stop()
    finally:
        eng.kill()
    stored = count_topic(bootstrap, topic)
    accepted = counts["ev202"] + warm
    extra = stored - accepted
    # A request wrk had sent when its time ran out may be stored without wrk
    # having read its 202; a 503 after the ack timeout may be stored later.
    in_flight_bound = INGEST_CONNECTIONS * depth * (INGEST_NDJSON_BATCH if mode == "ndjson" else 1)
    if extra < 0:
        raise BenchError(f"{topic}: {accepted} events answered 202 but only {stored} records in "
                         f"the topic ({-extra} MISSING); work dir {work}")
    if extra > in_flight_bound + counts["ev503"]:
        raise BenchError(f"{topic}: {stored} records but only {accepted} answered 202 ({extra} "
                         f"more than could have been cut off); work dir {work}")
    if rate and counts["requests"] != counts["sent"]:
        raise BenchError(f"{topic}: bench-fixedrate sent {counts['sent']} requests but got "
                         f"{counts['requests']} answers ({counts}); work dir {work}")
    if counts["s4xx"] or counts["sother"] or counts["ev400"]:
        raise BenchError(f"{topic}: unexpected answers {counts}; work dir {work}")
    secs = counts["duration_us"] / 1e6
    cpu = cpu1 - cpu0
    reqs = counts["requests"]
    ev = counts["ev202"]
    r = {
        "scenario": (f"HTTP ingest, fixed {rate:,} req/s" if rate else
                     INGEST_NAMES.get((mode, depth), f"HTTP ingest {mode} ×{depth}")),
        "fixed_rate": rate, "sent": counts.get("sent"), "late_sends": counts.get("late_sends"),
        "mode": mode, "pipeline_depth": depth, "connections": INGEST_CONNECTIONS,
        "wrk_threads": INGEST_THREADS, "topic": topic,
        "records": ev, "requests": reqs, "wall_s": secs,
        "requests_per_s": reqs / secs, "records_per_s": ev / secs,
        "cpu_s": cpu, "cpu_us_per_request": cpu * 1e6 / reqs if reqs else None,
        "cpu_us_per_record": cpu * 1e6 / ev if ev else None,
        "engine_life_cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024.0, "shutdown_s": stop_s,
        "p50_ms": lat.get("p50", 0) / 1000, "p99_ms": lat.get("p99", 0) / 1000,
        "p999_ms": lat.get("p99.9", 0) / 1000, "max_ms": lat.get("max", 0) / 1000,
        "p90_ms": lat.get("p90", 0) / 1000,
        "answered_202": counts["s202"], "answered_503": counts["s503"],
        "events_202": ev, "events_503": counts["ev503"], "warmup_202": warm,
        "stored_in_topic": stored, "stored_beyond_202": extra,
        "wrk_errors": {k[7:]: v for k, v in counts.items() if k.startswith("errors_") and v},
        "wrk_wall_s": wall, "work_dir": str(work),
    }
    return r, work, topic


def run_producelat(bootstrap, workroot, rate, duration, events_file):
    """The reference beside a fixed-rate ingest row: bench-producelat
    (bench/producelat.c), a bare librdkafka producer configured as the
    engine's (linger.ms=1, idempotent), producing the same events at the same
    fixed rate into a fresh topic, each timed from when it was due to its
    delivery report. What the broker and librdkafka cost by themselves."""
    topic = f"bench-plat-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic)
    rufile = workroot / f"{topic}.rusage"
    cmd = [helper("bench-producelat", "producelat.c", ("-lrdkafka", "-lpthread")), bootstrap,
           topic, str(rate), str(duration), str(events_file)]
    t0 = time.monotonic()
    proc = subprocess.Popen(measured(cmd, rufile), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    out, err = proc.communicate(timeout=duration + 90)
    ru = read_usage(proc, rufile)
    wall = time.monotonic() - t0
    if ru.status != 0:
        raise BenchError(f"bench-producelat exited {ru.status}: {err}\n{out[-2000:]}")
    counts, lat = parse_wrk(out)
    n = counts["ev202"]
    stored = count_topic(bootstrap, topic)
    if n != counts["requests"] or stored != n + 20:  # + its 20 warm-up events
        raise BenchError(f"{topic}: bench-producelat delivered {n} of {counts['requests']}, "
                         f"{stored} in the topic (expected {counts['requests'] + 20})")
    secs = float(duration)
    r = result(f"producer alone, fixed {rate:,}/s (reference)", n, secs, ru, None, {
        "fixed_rate": rate, "sent": counts["requests"], "late_sends": counts["late_sends"],
        "topic": topic, "records_per_s": n / secs, "process_wall_s": wall,
        "p50_ms": lat["p50"] / 1000, "p90_ms": lat["p90"] / 1000, "p99_ms": lat["p99"] / 1000,
        "p999_ms": lat["p99.9"] / 1000, "max_ms": lat["max"] / 1000,
        "stored_in_topic": stored, "reference_for": f"HTTP ingest, fixed {rate:,} req/s"})
    return r, topic


def run_kcat_produce(bootstrap, workroot, events, n):
    """The reference: kcat -P of n of the same events (with an eventId each, as
    source-http stores them), keyed by customerId, through an idempotent
    producer (acks=all), as the engine's. Wall time fork to exit; the topic
    must then hold exactly n records."""
    topic = f"bench-produce-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic)
    data = workroot / f"{topic}.txt"
    with open(data, "wb") as f:
        for i in range(n):
            e = events[i % len(events)]
            v = {"eventId": str(uuid.uuid4()), **e}
            f.write(e["customerId"].encode() + b"\x1f"
                    + json.dumps(v, separators=(",", ":")).encode() + b"\n")
    rufile = workroot / f"{topic}.rusage"
    args = ["kcat", "-P", "-b", bootstrap, "-t", topic, "-K", "\x1f",
            "-X", "enable.idempotence=true", "-X", "queue.buffering.max.messages=1000000",
            "-X", "queue.buffering.max.kbytes=1048576"]
    t0 = time.monotonic()
    with open(data, "rb") as f:
        proc = subprocess.Popen(measured(args, rufile), stdin=f, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        err = proc.stderr.read().decode(errors="replace")
        ru = read_usage(proc, rufile)
    wall = time.monotonic() - t0
    proc.stderr.close()
    data.unlink()
    if ru.status != 0:
        raise BenchError(f"kcat -P exited {ru.status}: {err}")
    stored = count_topic(bootstrap, topic)
    if stored != n:
        raise BenchError(f"kcat -P of {n} records left {stored} in {topic}")
    r = result("kcat -P produce (reference)", n, wall, ru, None,
               {"requests": None, "topic": topic, "stored_in_topic": stored})
    return r, topic


SCENARIO_GROUPS = ("consume", "dynamodb", "ingest", "sns", "idle", "e2e")


def ingest_scenarios(bootstrap, scale, keep, workroot, overrides):
    """HTTP ingest → Kafka with wrk (one event per request, pipelined, NDJSON
    batches) and its reference, kcat -P of the same events, in this invocation.
    Prints a table; returns what goes into latest.json under "ingest"."""
    duration = max(2, round(10 * scale))  # wrk takes whole seconds
    nprod = max(1, round(BASE_RECORDS * scale))
    events = make_ingest_events(INGEST_EVENTS, KEYS)
    events_file = workroot / "ingest-events.ndjson"
    events_file.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events))
    log(f"HTTP ingest: wrk -t{INGEST_THREADS} -c{INGEST_CONNECTIONS} for {duration:g}s per "
        f"scenario, {INGEST_BODY_BYTES} B events; reference kcat -P of {nprod} events")
    topics = []
    rows = []
    try:
        # Unmeasured warm-up: a broker fresh from start-up (JIT, page cache)
        # produces at a third of its warm rate, which moved every figure of
        # this group by up to 2x from one run to the next.
        _, t = run_kcat_produce(bootstrap, workroot, events, nprod)
        topics.append(t)
        ref, t = run_kcat_produce(bootstrap, workroot, events, nprod)
        topics.append(t)
        ref["vs_reference"] = 1.0
        log(f"kcat -P {ref['records_per_s']:,.0f} events/s, {ref['cpu_us_per_record']:.2f} µs/event")
        rows.append(ref)
        for mode, depth in (("single", 1), ("single", INGEST_PIPELINE_DEPTH), ("ndjson", 1)):
            r, work, t = run_http_ingest(bootstrap, workroot, mode, depth, duration,
                                         events_file, events)
            topics.append(t)
            r["vs_reference"] = r["records_per_s"] / ref["records_per_s"]
            r["cpu_vs_reference"] = r["cpu_us_per_record"] / ref["cpu_us_per_record"]
            if r["p99_ms"] == 0:
                r["p99_ms"] = None  # wrk's percentile() gave 0: see bench/README.md
            log(f"{r['scenario']}: {r['requests_per_s']:,.0f} requests/s, "
                f"{r['records_per_s']:,.0f} events/s, {r['cpu_us_per_request']:.1f} µs/request, "
                f"{r['answered_503']} answered 503, {r['stored_in_topic']} stored for "
                f"{r['events_202'] + r['warmup_202']} answered 202")
            if not keep:
                shutil.rmtree(work, ignore_errors=True)
                r.pop("work_dir", None)
            rows.append(r)
        for rate in INGEST_FIXED_RATES:
            pref, t = run_producelat(bootstrap, workroot, rate, duration, events_file)
            topics.append(t)
            log(f"{pref['scenario']}: p50 {pref['p50_ms']:.2f} ms, p99 {pref['p99_ms']:.2f} ms "
                f"from due time, {pref['late_sends']} sent > 1 ms late, "
                f"{pref['cpu_us_per_record']:.1f} µs/event")
            rows.append(pref)
            r, work, t = run_http_ingest(bootstrap, workroot, "single", 1, duration,
                                         events_file, events, rate=rate)
            topics.append(t)
            r["vs_reference"] = r["records_per_s"] / ref["records_per_s"]
            r["cpu_vs_reference"] = r["cpu_us_per_record"] / ref["cpu_us_per_record"]
            r["producer_alone"] = {k: pref[k] for k in ("p50_ms", "p90_ms", "p99_ms", "p999_ms",
                                                         "max_ms", "late_sends")}
            log(f"{r['scenario']}: {r['requests_per_s']:,.0f} requests/s answered, "
                f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms from due time, "
                f"{r['late_sends']} sent > 1 ms late, {r['cpu_us_per_request']:.1f} µs/request, "
                f"{r['stored_in_topic']} stored for {r['events_202'] + r['warmup_202']} "
                f"answered 202")
            if not keep:
                shutil.rmtree(work, ignore_errors=True)
                r.pop("work_dir", None)
            rows.append(r)
    finally:
        if not keep:
            for t in topics:
                err = topic_admin(bootstrap, "delete-topic", t)
                if err:
                    log(f"could not delete topic {t}: {err}")
    print()
    print(f"HTTP ingest → Kafka: wrk -t{INGEST_THREADS} -c{INGEST_CONNECTIONS} keep-alive, "
          f"{duration:g}s each, {INGEST_BODY_BYTES} B kyc-verified events (eventId assigned by "
          f"source-http), topic of {PARTITIONS} partitions; engine CPU over the wrk run; "
          f"reference kcat -P of {nprod:,} of the same events (idempotent, acks=all)")
    if overrides:
        print(f"overrides (not the default scenario): {json.dumps(overrides)}")
    print(table(rows, INGEST_COLUMNS))
    print()
    for r in rows[1:]:
        if r.get("reference_for"):
            continue
        if r.get("fixed_rate"):
            pa = r["producer_alone"]
            print(f"{r['scenario']}: {r['sent']:,} requests due over {duration}s, all answered, "
                  f"{r['late_sends']:,} sent more than 1 ms after due (generator not scheduled in time, or "
                  f"every connection busy); "
                  f"latency from due time p50 {r['p50_ms']:.2f} ms, p90 {r['p90_ms']:.2f} ms, "
                  f"p99 {r['p99_ms']:.2f} ms, p99.9 {r['p999_ms']:.2f} ms, max "
                  f"{r['max_ms']:.2f} ms; {r['cpu_us_per_request']:.1f} engine CPU µs/request; "
                  f"{r['stored_in_topic']:,} in the topic for {r['events_202']:,} + "
                  f"{r['warmup_202']} warm-up 202s; the producer alone at the same rate: p50 "
                  f"{pa['p50_ms']:.2f}, p99 {pa['p99_ms']:.2f}, p99.9 {pa['p999_ms']:.2f}, max "
                  f"{pa['max_ms']:.2f} ms ({pa['late_sends']:,} sent > 1 ms late)")
            continue
        print(f"{r['scenario']}: {r['records_per_s']:,.0f} events/s = {r['vs_reference']:.2f}× "
              f"kcat -P's rate, {r['cpu_vs_reference']:.1f}× its CPU per event "
              f"({r['cpu_us_per_record']:.2f} vs {ref['cpu_us_per_record']:.2f} µs); "
              f"{r['events_202']:,} answered 202 (+{r['warmup_202']} warm-up), "
              f"{r['events_503']:,} answered 503, {r['stored_in_topic']:,} in the topic "
              f"({r['stored_beyond_202']:,} beyond the 202s: requests cut off when wrk stopped)")
    return {"duration_s": duration, "connections": INGEST_CONNECTIONS,
            "wrk_threads": INGEST_THREADS, "body_bytes": INGEST_BODY_BYTES,
            "columns": [h for h, _, _ in INGEST_COLUMNS], "table": rows}


# ------------------------------------------------------ scenario: consume -> sink-dynamodb

DDB_TABLE = "bench-events"
DDB_ITEM = {"eventId": "${/eventId}", "customerId": "${/customerId}",
            "eventType": "${/eventType}", "timestamp": "${/timestamp}", "data": "${/data}"}
DDB_ENV = {"AWS_ACCESS_KEY_ID": "AKIDBENCHDUMMY", "AWS_SECRET_ACCESS_KEY": "bench-dummy-secret",
           "AWS_REGION": "eu-west-1"}


class Responder:
    """BUILD/bench/ddb_responder (bench/ddb_responder.c, libuv): a loopback
    BatchWriteItem endpoint that counts the eventIds it is sent."""

    def __init__(self, work):
        self.portfile = work / "ddb.port"
        self.log = work / "ddb-responder.log"
        exe, src = BUILD / "bench" / "ddb_responder", BENCH / "ddb_responder.c"
        if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
            exe.parent.mkdir(parents=True, exist_ok=True)
            p = subprocess.run(["cc", "-O2", "-std=c11", "-D_GNU_SOURCE", "-o", str(exe), str(src),
                                "-luv"], capture_output=True, text=True)
            if p.returncode != 0:
                raise BenchError(f"cannot build {exe}: {p.stderr}")
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen([str(exe), str(self.portfile)], stdout=logf,
                                         stderr=subprocess.STDOUT)
        end = time.monotonic() + 10
        while not self.portfile.exists():
            if self.proc.poll() is not None or time.monotonic() > end:
                raise BenchError(f"ddb_responder did not start:\n{tail(self.log)}")
            time.sleep(0.02)
        self.port = int(self.portfile.read_text())
        self.endpoint = f"http://127.0.0.1:{self.port}"
        import http.client
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def get(self, path):
        self.conn.request("GET", path)
        r = self.conn.getresponse()
        return r.read()

    def count(self):
        return json.loads(self.get("/_count"))

    def ids(self):
        return set(self.get("/_ids").decode().split())

    def stop(self):
        cpu = proc_cpu_s(self.proc.pid)
        self.conn.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return cpu


def drive_ddb(proc_alive, responder, n, t0_wall, elapsed, what):
    """Polls the responder until it holds n distinct eventIds. Returns (first
    record s, last record s)."""
    first = None
    last_progress = time.monotonic()
    seen = 0
    while True:
        c = responder.count()
        if c["distinct"] > seen:
            seen = c["distinct"]
            last_progress = time.monotonic()
            if first is None:
                first = elapsed()
        if seen >= n:
            return first, max(first, c["last_item_wall"] - t0_wall)
        proc_alive()
        if time.monotonic() - last_progress > STALL_S:
            raise BenchError(f"{what}: no progress for {STALL_S:.0f}s at {seen} of {n} records")
        time.sleep(POLL_S)


def check_ddb(responder, n, ids, what, work):
    c = responder.count()
    got = responder.ids()
    want = set(ids)
    if got != want:
        raise BenchError(f"{what}: the endpoint got {len(got)} distinct eventIds, expected {n}; "
                         f"missing e.g. {sorted(want - got)[:5]}, unexpected e.g. "
                         f"{sorted(got - want)[:5]}; work dir {work}")
    return {"ddb_requests": c["requests"], "ddb_items": c["items"],
            "ddb_duplicate_items": c["items"] - len(got),
            "items_per_request": c["items"] / max(c["requests"], 1)}


def run_engine_ddb(bootstrap, topic, n, ids, workroot, rep):
    """The engine with one sink-dynamodb pipeline (put → BatchWriteItem) into
    the loopback responder, fresh consumer group; measured like sink-file,
    until the responder holds every eventId."""
    work = Path(tempfile.mkdtemp(prefix=f"ddb-{rep}-", dir=workroot))
    resp = Responder(work)
    try:
        pipeline = {"name": f"bench-ddb-{uuid.uuid4().hex[:10]}", "topics": [topic],
                    "batch": dict(BATCH),
                    "sinks": [{"plugin": "dynamodb", "name": "ddb", "table": DDB_TABLE,
                               "region": "eu-west-1", "endpoint": resp.endpoint,
                               "key_attributes": ["eventId"], "item": dict(DDB_ITEM)}]}
        pipeline = merge(pipeline, env_json("BENCH_DDB_PIPELINE"))
        eng = Engine(work, engine_config(bootstrap), {"bench-ddb": pipeline},
                     env=dict(os.environ, **DDB_ENV)).start()
        try:
            first, done_at = drive_ddb(lambda: eng.check_alive("before the last record"), resp,
                                       n, eng.t0_wall, eng.elapsed, "consume → sink-dynamodb")
            pid = eng.pid()
            cpu_at_last = proc_cpu_s(pid) if pid else None
            usage, stop_s = eng.stop()
        finally:
            eng.kill()
        check = check_ddb(resp, n, ids, "consume → sink-dynamodb", work)
    finally:
        resp_cpu = resp.stop()
    return result("consume → sink-dynamodb", n, done_at, usage, first,
                  {"cpu_s_to_last_record": cpu_at_last, "shutdown_s": stop_s,
                   "responder_cpu_s": resp_cpu, **check}), work


def run_node_ddb(bootstrap, topic, n, ids, workroot, rep):
    """The reference: bench/node-ddb-consumer.js (kafkajs + @aws-sdk/client-dynamodb,
    25 items per BatchWriteItem) into its own loopback responder."""
    work = Path(tempfile.mkdtemp(prefix=f"node-ddb-{rep}-", dir=workroot))
    resp = Responder(work)
    rufile = work / "node.rusage"
    logp = work / "node.log"
    try:
        cmd = ["node", BENCH / "node-ddb-consumer.js", bootstrap, topic,
               f"bench-node-{uuid.uuid4().hex[:10]}", n, resp.endpoint, DDB_TABLE]
        t0_wall = time.time()
        t0 = time.monotonic()
        with open(logp, "wb") as logf:
            proc = subprocess.Popen(measured(cmd, rufile), stdout=logf, stderr=subprocess.STDOUT,
                                    env=dict(os.environ, **DDB_ENV))

        def alive():
            if proc.poll() is not None and resp.count()["distinct"] < n:
                raise BenchError(f"node consumer exited {proc.returncode}:\n{tail(logp)}")
        try:
            first, done_at = drive_ddb(alive, resp, n, t0_wall, lambda: time.monotonic() - t0,
                                       "node kafkajs + AWS SDK")
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.terminate()
                proc.wait()
            usage = read_usage(proc, rufile)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if usage.status != 0:
            raise BenchError(f"node consumer exited {usage.status}:\n{tail(logp)}")
        check = check_ddb(resp, n, ids, "node kafkajs + AWS SDK", work)
    finally:
        resp_cpu = resp.stop()
    return result("Node.js kafkajs + AWS SDK (reference)", n, done_at, usage, first,
                  {"responder_cpu_s": resp_cpu, **check}), work


def ddb_scenarios(bootstrap, topic, n, ids, repeat, keep, workroot, overrides):
    """consume → sink-dynamodb beside its references (kcat raw consume, the
    Node.js kafkajs + AWS SDK consumer), interleaved `repeat` times. Prints a
    table; returns what goes into latest.json under "dynamodb"."""
    if not shutil.which("node"):
        raise BenchError("node not found (scripts/install-deps)")
    if not (ROOT / ".deps" / "node" / "node_modules" / "@aws-sdk" / "client-dynamodb").exists():
        raise BenchError("@aws-sdk/client-dynamodb is not installed (run scripts/install-deps)")
    runs = {"kcat": [], "node": [], "engine": []}
    for rep in range(repeat):
        k = run_kcat(bootstrap, topic, n, workroot)
        runs["kcat"].append(k)
        nd, work = run_node_ddb(bootstrap, topic, n, ids, workroot, rep)
        runs["node"].append(nd)
        log(f"run {rep + 1}/{repeat}: node kafkajs + AWS SDK {nd['records_per_s']:,.0f} rec/s, "
            f"{nd['cpu_us_per_record']:.2f} µs/rec, {nd['ddb_requests']} requests, "
            f"{nd['ddb_duplicate_items']} duplicate items")
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
        e, work = run_engine_ddb(bootstrap, topic, n, ids, workroot, rep)
        runs["engine"].append(e)
        log(f"run {rep + 1}/{repeat}: sink-dynamodb {e['records_per_s']:,.0f} rec/s, "
            f"{e['cpu_us_per_record']:.2f} µs/rec, {e['ddb_requests']} requests "
            f"({e['items_per_request']:.1f} items each), {e['ddb_duplicate_items']} duplicate "
            f"items, first record after {e['first_record_s']:.2f}s")
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    ref = median_run(runs["kcat"])
    node = median_run(runs["node"])
    eng = median_run(runs["engine"])
    for r in (ref, node, eng):
        r["vs_reference"] = r["records_per_s"] / ref["records_per_s"]
        r.pop("work_dir", None)
    eng["cpu_vs_node"] = node["cpu_us_per_record"] / eng["cpu_us_per_record"]
    eng["rate_vs_node"] = eng["records_per_s"] / node["records_per_s"]
    rows = [ref, node, eng]
    print()
    print(f"consume → sink-dynamodb (put, BatchWriteItem) into a loopback endpoint "
          f"(bench/ddb_responder.c): {n:,} records; median of {repeat} runs; vs reference = "
          f"records/s ÷ kcat raw consume's")
    if overrides:
        print(f"overrides (not the default scenario): {json.dumps(overrides)}")
    print(table(rows))
    print()
    print(f"consume → sink-dynamodb: {eng['records_per_s']:,.0f} records/s (target ≥ 150,000) = "
          f"{eng['rate_vs_node']:.1f}× the Node.js consumer's rate; {eng['cpu_us_per_record']:.2f} "
          f"CPU µs/record (target ≤ 5) against Node.js's {node['cpu_us_per_record']:.2f}: "
          f"{eng['cpu_vs_node']:.1f}× less CPU per record (target ≥ 14×). Requests: engine "
          f"{eng['ddb_requests']:,} ({eng['items_per_request']:.1f} items each), Node.js "
          f"{node['ddb_requests']:,}; every eventId arrived, duplicate items: engine "
          f"{sum(r['ddb_duplicate_items'] for r in runs['engine'])}, Node.js "
          f"{sum(r['ddb_duplicate_items'] for r in runs['node'])} over all runs. Responder CPU "
          f"(not counted above): {eng['responder_cpu_s']:.2f}s / {node['responder_cpu_s']:.2f}s.")
    return {"table": rows, "runs": runs, "item_template": DDB_ITEM,
            "target_records_per_s": 150_000, "target_cpu_us_per_record": 5,
            "target_cpu_vs_node": 14}


# ------------------------------------------------------ scenario: consume -> sink-sns

SNS_TOPIC_ARN = "arn:aws:sns:eu-west-1:123456789012:bench-events"


class SnsResponder(Responder):
    """bench/sns_responder.py: a loopback Publish / PublishBatch endpoint that
    counts the eventIds of the messages it is sent (same interface as the
    DynamoDB one)."""

    def __init__(self, work):
        self.portfile = work / "sns.port"
        self.log = work / "sns-responder.log"
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen([sys.executable, str(BENCH / "sns_responder.py"),
                                          str(self.portfile)], stdout=logf,
                                         stderr=subprocess.STDOUT)
        end = time.monotonic() + 10
        while not self.portfile.exists():
            if self.proc.poll() is not None or time.monotonic() > end:
                raise BenchError(f"sns_responder did not start:\n{tail(self.log)}")
            time.sleep(0.02)
        self.port = int(self.portfile.read_text())
        self.endpoint = f"http://127.0.0.1:{self.port}/"
        import http.client
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)


def run_engine_sns(bootstrap, topic, n, ids, workroot, rep, batched):
    """The engine with one sink-sns pipeline (message = the whole value, one
    String attribute, no Redis dedupe) into the loopback responder, fresh
    consumer group; `batched`: PublishBatch (10 per request), else one Publish
    per record. Measured until the responder holds every eventId."""
    what = "consume → sink-sns " + ("(PublishBatch)" if batched else "(Publish)")
    work = Path(tempfile.mkdtemp(prefix=f"sns-{'batch' if batched else 'single'}-{rep}-",
                                 dir=workroot))
    resp = SnsResponder(work)
    try:
        pipeline = {"name": f"bench-sns-{uuid.uuid4().hex[:10]}", "topics": [topic],
                    "batch": dict(BATCH),
                    "sinks": [{"plugin": "sns", "name": "sns", "topic_arn": SNS_TOPIC_ARN,
                               "endpoint": resp.endpoint, "message": "${/}",
                               "message_attributes": {"eventType": {
                                   "type": "String", "value": "${/eventType}"}},
                               "dedupe_window": "off", "batch": batched, "max_in_flight": 64}]}
        eng = Engine(work, engine_config(bootstrap), {"bench-sns": pipeline},
                     env=dict(os.environ, **DDB_ENV)).start()
        try:
            first, done_at = drive_ddb(lambda: eng.check_alive("before the last record"), resp,
                                       n, eng.t0_wall, eng.elapsed, what)
            usage, stop_s = eng.stop()
        finally:
            eng.kill()
        c = resp.count()
        got = resp.ids()
        if got != set(ids):
            raise BenchError(f"{what}: the endpoint got {len(got)} distinct eventIds, expected "
                             f"{n}; work dir {work}")
    finally:
        resp_cpu = resp.stop()
    return result(what, n, done_at, usage, first,
                  {"shutdown_s": stop_s, "responder_cpu_s": resp_cpu,
                   "sns_requests": c["requests"], "sns_messages": c["messages"],
                   "sns_duplicate_messages": c["messages"] - len(got),
                   "messages_per_request": c["messages"] / max(c["requests"], 1)}), work


def sns_scenarios(bootstrap, topic, n, ids, repeat, keep, workroot):
    """consume → sink-sns with PublishBatch against single Publish, interleaved
    `repeat` times into the loopback responder. Prints a table and the
    ratios; returns what goes into latest.json under "sns"."""
    runs = {"batch": [], "single": []}
    for rep in range(repeat):
        for batched, key in ((True, "batch"), (False, "single")):
            r, work = run_engine_sns(bootstrap, topic, n, ids, workroot, rep, batched)
            runs[key].append(r)
            log(f"run {rep + 1}/{repeat}: {r['scenario']} {r['records_per_s']:,.0f} "
                f"notifications/s, {r['cpu_us_per_record']:.2f} µs/rec, {r['sns_requests']:,} "
                f"requests ({r['messages_per_request']:.1f} messages each)")
            if not keep:
                shutil.rmtree(work, ignore_errors=True)
    b, s = median_run(runs["batch"]), median_run(runs["single"])
    for r in (b, s):
        r.pop("work_dir", None)
    b["rate_vs_single"] = b["records_per_s"] / s["records_per_s"]
    b["cpu_vs_single"] = s["cpu_us_per_record"] / b["cpu_us_per_record"]
    print()
    print(f"consume → sink-sns into a loopback SNS (bench/sns_responder.py): {n:,} records; "
          f"median of {repeat} runs")
    print(table([b, s]))
    print()
    print(f"consume → sink-sns: PublishBatch {b['records_per_s']:,.0f} notifications/s, "
          f"{b['cpu_us_per_record']:.2f} CPU µs/record ({b['sns_requests']:,} requests); single "
          f"Publish {s['records_per_s']:,.0f} notifications/s, {s['cpu_us_per_record']:.2f} CPU "
          f"µs/record ({s['sns_requests']:,} requests). PublishBatch: {b['rate_vs_single']:.1f}× "
          f"the rate, {b['cpu_vs_single']:.1f}× less CPU per record. Duplicates: "
          f"{sum(r['sns_duplicate_messages'] for rs in runs.values() for r in rs)}. Responder "
          f"CPU (not counted above): {b['responder_cpu_s']:.2f}s / {s['responder_cpu_s']:.2f}s.")
    return {"table": [b, s], "runs": runs}


# ----------------------------------------------------------- process sampling (idle, e2e)

def proc_sample(pid):
    """VmRSS and VmHWM (KiB) and the thread count of a live process, with the
    CPU time (ns, /proc/PID/task/*/schedstat) and the voluntary / involuntary
    context switches summed over its threads: what it costs while it waits."""
    s = {"rss_kb": None, "hwm_kb": None, "threads": None, "cpu_ns": 0, "vol_cs": 0,
         "invol_cs": 0, "by_thread": {}}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k == "VmRSS":
                s["rss_kb"] = int(v.split()[0])
            elif k == "VmHWM":
                s["hwm_kb"] = int(v.split()[0])
            elif k == "Threads":
                s["threads"] = int(v)
    schedstat = True
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    s["cpu_ns"] += int(f.read().split()[0])
            except FileNotFoundError:
                schedstat = False  # a kernel without CONFIG_SCHED_INFO
            comm = "?"
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("Name:"):
                        comm = line.split(None, 1)[1].strip() if len(line.split()) > 1 else "?"
                    elif line.startswith("voluntary_ctxt_switches:"):
                        s["vol_cs"] += int(line.split()[1])
                        s["by_thread"][comm] = s["by_thread"].get(comm, 0) + int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        s["invol_cs"] += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended meanwhile
    if not schedstat:
        # clock ticks (10 ms) instead of nanoseconds
        cpu = proc_cpu_s(pid)
        if cpu is None:
            raise BenchError(f"cannot read the CPU time of process {pid}")
        s["cpu_ns"] = int(cpu * 1e9)
    return s


def nofile_limits(pid):
    """(soft, hard) RLIMIT_NOFILE of a live process, from /proc/PID/limits."""
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return (int(soft) if soft.isdigit() else -1, int(hard) if hard.isdigit() else -1)
    return None


def raise_nofile():
    """preexec_fn: soft RLIMIT_NOFILE up to the hard limit (the load tool's)."""
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def measure_window(pid, seconds, alive):
    """Samples pid before and after `seconds` of nothing happening."""
    a = proc_sample(pid)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        alive()
        time.sleep(min(0.5, max(0.0, end - time.monotonic())))
    b = proc_sample(pid)
    return {"window_s": seconds, "rss_mib": b["rss_kb"] / 1024, "hwm_mib": b["hwm_kb"] / 1024,
            "threads": b["threads"], "window_cpu_ms": (b["cpu_ns"] - a["cpu_ns"]) / 1e6,
            "cpu_ms_per_s": (b["cpu_ns"] - a["cpu_ns"]) / 1e6 / seconds,
            "wakeups_per_s": (b["vol_cs"] - a["vol_cs"]) / seconds,
            "involuntary_cs_per_s": (b["invol_cs"] - a["invol_cs"]) / seconds,
            # by thread name (threads of one name summed), busiest first
            "wakeups_per_s_by_thread": dict(sorted(
                ((k, (v - a["by_thread"].get(k, 0)) / seconds) for k, v in b["by_thread"].items()),
                key=lambda kv: -kv[1]))}


class LineReader:
    """Lines from a child's stdout pipe, with a timeout (select)."""

    def __init__(self, proc, what, logp):
        self.proc, self.what, self.logp, self.buf = proc, what, logp, b""

    def line(self, timeout):
        import select
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.what}: nothing within {timeout:.0f}s:\n{tail(self.logp)}")
            r, _, _ = select.select([self.proc.stdout], [], [], min(left, 1.0))
            if r:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise BenchError(f"{self.what} exited ({self.proc.wait()}):\n"
                                     f"{tail(self.logp)}")
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode(errors="replace")


def stop_node(proc, what, logp):
    """SIGTERM a Node.js process of ours and check that it exits 0."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise BenchError(f"{what} did not exit within 30s of SIGTERM:\n{tail(logp)}")
    if proc.returncode != 0:
        raise BenchError(f"{what} exited {proc.returncode}:\n{tail(logp)}")


def http_get(port, path, timeout=5):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def wait_ready(admin_port, eng, timeout=60.0):
    """Waits until the engine's GET /readyz answers 200 (every pipeline running)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        eng.check_alive("before it was ready")
        try:
            if http_get(admin_port, "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise BenchError(f"GET /readyz did not answer 200 within {timeout:.0f}s:\n{eng.tail()}")


def redis_cleanup(redis_url, prefix):
    """Deletes the keys a run left under its own key prefix."""
    if not shutil.which("redis-cli"):
        log(f"redis-cli not found: keys {prefix}* left in {redis_url}")
        return
    p = subprocess.run(["redis-cli", "-u", redis_url, "--scan", "--pattern", f"{prefix}*"],
                       capture_output=True, text=True, timeout=120)
    keys = p.stdout.split()
    for i in range(0, len(keys), 1000):
        subprocess.run(["redis-cli", "-u", redis_url, "del", *keys[i:i + 1000]],
                       capture_output=True, timeout=120)


def admin_port_of(cfg):
    return int(cfg["admin_listen"].rsplit(":", 1)[1])


def print_overrides(*names):
    got = {k: env_json(k) for k in names if env_json(k)}
    if got:
        print(f"overrides (not the default scenario): {json.dumps(got)}")


# ---------------------------------------------------------------------- scenario: idle

IDLE_ENV = {"AWS_ACCESS_KEY_ID": "AKIDBENCHDUMMY", "AWS_SECRET_ACCESS_KEY": "bench-dummy-secret",
            "AWS_REGION": "eu-west-1", "WEBSOCKET_JWT_SECRET": "bench-idle-secret"}


def idle_pipelines(prefix, schemas, tag):
    """The repository's pipelines (pipelines/*.json but the engine configs),
    copied with a fresh group_id each and their topics renamed to
    prefix + name (so nothing another run produced can flow); the schemas the
    ingest pipeline needs are copied under the new names into `schemas`."""
    out = {}
    ren = lambda t: prefix + t
    for src in sorted((ROOT / "pipelines").glob("*.json")):
        if src.name.startswith("connectd"):
            continue
        p = json.loads(src.read_text())
        if "topics" in p:
            p["topics"] = [ren(t) for t in p["topics"]]
            p["group_id"] = f"bench-idle-{tag}-{p['name']}"
        if isinstance(p.get("source"), dict) and "topics" in p["source"]:
            p["source"]["topics"] = [ren(t) for t in p["source"]["topics"]]
        if isinstance(p.get("errors"), dict) and p["errors"].get("dead_letter_topic"):
            p["errors"]["dead_letter_topic"] = ren(p["errors"]["dead_letter_topic"])
        out[src.stem] = p
    for t in EVENT_TYPES:
        s = json.loads((ROOT / "pipelines" / "schemas" / f"{t}.json").read_text())
        s["title"] = ren(t)
        (schemas / f"{ren(t)}.json").write_text(json.dumps(s, indent=2))
    return out


def run_idle_engine(bootstrap, window, workroot, tag, prefix, redis_url):
    work = Path(tempfile.mkdtemp(prefix="idle-engine-", dir=workroot))
    schemas = work / "schemas"
    schemas.mkdir()
    pipelines = idle_pipelines(prefix, schemas, tag)
    cfg = engine_config(bootstrap)
    cfg["log_level"] = "info"
    if redis_url:
        cfg["redis_url"] = redis_url
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = dict(os.environ, **IDLE_ENV, DYNAMODB_ENDPOINT=closed, SNS_ENDPOINT=closed,
               WEBSOCKET_LISTEN=f"127.0.0.1:{free_port()}",
               SOURCE_HTTP_LISTEN=f"127.0.0.1:{free_port()}",
               CONNECTD_SCHEMAS_DIR=str(schemas), CONNECTD_OUT_DIR=str(work / "out"))
    env.pop("REDIS_URL", None)  # the engine config carries it
    eng = Engine(work, cfg, pipelines, env=env).start()
    try:
        wait_ready(admin_port_of(cfg), eng)
        m = measure_window(eng.pid(), window, lambda: eng.check_alive("while idle"))
        flowed = metric_sum(admin_port_of(cfg), "connectd_records_in_total")
        usage, stop_s = eng.stop()
    finally:
        eng.kill()
    with open(eng.log, errors="replace") as f:
        complaints = [l.rstrip() for l in f if " WARN " in l or " ERROR " in l]
    r = {"scenario": f"connectd, {len(pipelines)} repository pipelines"
                     + (" (Redis)" if redis_url else ""),
         "pipelines": sorted(pipelines), "peak_rss_mib": usage.ru_maxrss / 1024,
         "shutdown_s": stop_s, "records_in": flowed, "log_warnings": complaints[:20],
         "work_dir": str(work), **m}
    return r, work


def run_idle_node(bootstrap, window, workroot, tag, topics):
    work = Path(tempfile.mkdtemp(prefix="idle-node-", dir=workroot))
    logp = work / "node.log"
    with open(logp, "wb") as logf:
        proc = subprocess.Popen(["node", str(BENCH / "node-idle.js"), bootstrap,
                                 f"bench-idle-{tag}-node", *topics],
                                stdout=subprocess.PIPE, stderr=logf)
    try:
        rd = LineReader(proc, "node-idle.js", logp)
        line = rd.line(90)
        if line != "READY":
            raise BenchError(f"node-idle.js said {line!r}:\n{tail(logp)}")

        def alive():
            if proc.poll() is not None:
                raise BenchError(f"node-idle.js exited {proc.returncode}:\n{tail(logp)}")
        m = measure_window(proc.pid, window, alive)
        stop_node(proc, "node-idle.js", logp)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    return {"scenario": f"Node.js: {len(topics)} kafkajs consumers + ws + http (reference)",
            "work_dir": str(work), **m}, work


IDLE_COLUMNS = [("scenario", "scenario", "{}"), ("window s", "window_s", "{:.0f}"),
                ("VmRSS MiB", "rss_mib", "{:.1f}"), ("VmHWM MiB", "hwm_mib", "{:.1f}"),
                ("threads", "threads", "{}"), ("CPU ms in window", "window_cpu_ms", "{:.1f}"),
                ("CPU ms/s", "cpu_ms_per_s", "{:.2f}"), ("wakeups/s", "wakeups_per_s", "{:.1f}"),
                ("RSS vs reference", "vs_reference", "{:.2f}")]


def idle_scenarios(bootstrap, scale, keep, workroot):
    """The engine running the repository's pipelines with nothing flowing,
    beside the Node.js reference at rest; each measured over the same window
    after it is ready. Prints a table; returns what goes into latest.json."""
    if not shutil.which("node"):
        raise BenchError("node not found (scripts/install-deps)")
    window = max(5.0, 20 * scale)
    tag = uuid.uuid4().hex[:8]
    prefix = f"bench-idle-{tag}-"
    topics = [prefix + t for t in EVENT_TYPES]
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        raise BenchError("REDIS_URL not set (bench/run starts redis: scripts/redis-start)")
    log(f"idle: topics {prefix}*, {window:g}s window after ready")
    try:
        for t in topics:
            create_topic(bootstrap, t)
        eng, w1 = run_idle_engine(bootstrap, window, workroot, tag, prefix, redis_url)
        node, w2 = run_idle_node(bootstrap, window, workroot, tag, topics)
    finally:
        if not keep:
            # The dead-letter topics exist only if something was dead-lettered.
            p = subprocess.run(["node", str(ROOT / "scripts" / "kafka-admin.js"), "list-prefix",
                                prefix], capture_output=True, text=True, timeout=120,
                               env=dict(os.environ, KAFKA_BOOTSTRAP=bootstrap))
            err = topic_admin(bootstrap, "delete-topic",
                              *sorted(set(topics) | set(p.stdout.split())))
            if err:
                log(f"could not delete topics {prefix}*: {err}")
    if eng["records_in"]:
        raise BenchError(f"idle: the engine took in {eng['records_in']:.0f} records "
                         f"(connectd_records_in_total): not idle; work dir {eng['work_dir']}")
    if eng["log_warnings"]:
        raise BenchError(f"idle: the engine logged warnings or errors while idle (e.g. "
                         f"{eng['log_warnings'][0]}); work dir {eng['work_dir']}")
    if not keep:
        shutil.rmtree(w1, ignore_errors=True)
        shutil.rmtree(w2, ignore_errors=True)
        eng.pop("work_dir")
        node.pop("work_dir")
    node["vs_reference"] = 1.0
    eng["vs_reference"] = eng["rss_mib"] / node["rss_mib"]
    rows = [node, eng]
    print()
    print(f"idle: the engine with the repository's pipelines ({', '.join(eng['pipelines'])}; "
          f"topics renamed per run, AWS endpoints a closed port, engine redis_url set) and "
          f"Node.js at rest, each measured for {window:g}s after it was ready (engine: GET "
          f"/readyz 200; Node.js: every consumer assigned); wakeups = voluntary context "
          f"switches of all threads")
    print_overrides("BENCH_ENGINE_CONFIG")
    print(table(rows, IDLE_COLUMNS))
    print()
    print(f"idle: connectd {eng['rss_mib']:.1f} MiB RSS (target < 20) = "
          f"{node['rss_mib'] / eng['rss_mib']:.1f}× less than Node.js's {node['rss_mib']:.1f} "
          f"MiB; CPU {eng['cpu_ms_per_s']:.2f} ms/s against {node['cpu_ms_per_s']:.2f}; "
          f"{eng['wakeups_per_s']:.1f} wakeups/s against {node['wakeups_per_s']:.1f}; "
          f"{eng['threads']} threads against {node['threads']}.")
    for r in rows:
        top = [f"{k} {v:.1f}" for k, v in r["wakeups_per_s_by_thread"].items() if v > 0][:6]
        print(f"  wakeups/s by thread, {r['scenario']}: {', '.join(top) or 'none'}")
    return {"window_s": window, "table": rows, "target_rss_mib": 20}


# --------------------------------------------------------------- scenario: end to end

E2E_SECRET = "bench-e2e-secret-0123456789abcdef"
E2E_CUSTOMERS = 1_000
E2E_RATE = 1_000
E2E_WIDE_CUSTOMERS = 10_000   # the connections-held row: one client each, a burst of one event each
E2E_MESSAGE = {"type": "E2E", "eventId": "${/eventId}", "customerId": "${/customerId}",
               "n": "${/data/n}", "sentUs": "${/data/sentUs}"}
E2E_WARMUP = 20


def e2e_pipelines(topic, schemas_dir, http_port, ws_port, key_prefix, tag):
    """pipelines/ingest.json and pipelines/kyc-verified.json, copied and trimmed:
    the source on one fresh topic, and the sink pipeline with only its websocket
    sink (message: the event's customer, n and send time)."""
    ingest = json.loads((ROOT / "pipelines" / "ingest.json").read_text())
    ingest["name"] = f"bench-e2e-ingest-{tag}"
    ingest["source"].update({"listen": f"127.0.0.1:{http_port}", "topics": [topic],
                             "schemas_dir": str(schemas_dir)})
    push = json.loads((ROOT / "pipelines" / "kyc-verified.json").read_text())
    ws = [s for s in push["sinks"] if s["plugin"] == "websocket"]
    if len(ws) != 1:
        raise BenchError("pipelines/kyc-verified.json: expected one websocket sink")
    sink = dict(ws[0], mode="server", listen=f"127.0.0.1:{ws_port}", jwt_secret=E2E_SECRET,
                key_prefix=key_prefix, message=dict(E2E_MESSAGE))
    for k in ("endpoint", "region"):
        sink.pop(k, None)
    push.update({"name": f"bench-e2e-push-{tag}", "topics": [topic], "sinks": [sink],
                 "group_id": f"bench-e2e-push-{tag}"})
    if isinstance(push.get("errors"), dict) and push["errors"].get("dead_letter_topic"):
        push["errors"]["dead_letter_topic"] = f"{topic}.dlq"
    push = merge(push, env_json("BENCH_E2E_PIPELINE"))
    return {"bench-e2e-ingest": ingest, "bench-e2e-push": push}


def e2e_warmup(http_port, topic):
    """E2E_WARMUP events for a customer no client holds: connects the producer
    and gets the sink pipeline fetching before anything is measured."""
    base = {"eventType": "kyc-verified", "customerId": "bench-warmup", "applicationId": "app-w",
            "timestamp": "2024-05-01T12:00:00.000Z",
            "data": {"status": "VERIFIED", "riskLevel": "LOW", "n": -1, "sentUs": 0}}
    ok = post_events(http_port, topic, [base] * E2E_WARMUP)
    if ok != E2E_WARMUP:
        raise BenchError(f"e2e warm-up: {ok} of {E2E_WARMUP} events answered 202")


def metric_sum(admin_port, name):
    """The sum of a Prometheus metric's samples on the engine's GET /metrics."""
    status, body = http_get(admin_port, "/metrics")
    total = 0.0
    for line in body.decode(errors="replace").splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def run_load(cfg, work, server_pid, server_alive, what):
    """bench/e2e-load.js against a ready server: connects every client, then
    samples the server (RSS with every client connected), lets the tool send,
    and samples the server's CPU over the sending. Returns (tool result,
    samples)."""
    logp = work / "load.log"
    before = proc_sample(server_pid)
    with open(logp, "wb") as logf:
        proc = subprocess.Popen(["node", str(BENCH / "e2e-load.js"), json.dumps(cfg)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logf,
                                preexec_fn=raise_nofile)
    try:
        rd = LineReader(proc, "e2e-load.js", logp)
        line = rd.line(180)
        if not line.startswith("CONNECTED "):
            raise BenchError(f"e2e-load.js said {line[:300]!r}:\n{tail(logp)}")
        connected = json.loads(line[10:])
        server_alive()
        time.sleep(0.5)
        held = proc_sample(server_pid)
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        line = rd.line(cfg.get("duration_s", 0) + 180)
        after = proc_sample(server_pid)
        if not line.startswith("RESULT "):
            raise BenchError(f"e2e-load.js said {line[:300]!r}:\n{tail(logp)}")
        res = json.loads(line[7:])
        proc.wait(timeout=60)
        if proc.returncode != 0:
            raise BenchError(f"e2e-load.js exited {proc.returncode}:\n{tail(logp)}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stdin.close()
    server_alive()
    res["connect_s"] = connected["connect_s"]
    cpu = (after["cpu_ns"] - held["cpu_ns"]) / 1e9
    samples = {"rss_before_clients_mib": before["rss_kb"] / 1024,
               "rss_clients_held_mib": held["rss_kb"] / 1024,
               "rss_after_mib": after["rss_kb"] / 1024,
               "kib_per_connection": (held["rss_kb"] - before["rss_kb"]) / cfg["customers"],
               "cpu_s": cpu, "cpu_us_per_record": cpu * 1e6 / max(res["events"], 1),
               "threads": after["threads"]}
    check_load(res, what, work)
    return res, samples


def check_load(res, what, work):
    """Every event answered 202 and delivered exactly once to exactly its
    customer's client, which stayed connected; nothing unexpected arrived."""
    n = res["events"]
    problems = []
    if res["status"] != {"202": n} or res["post_errors"]:
        problems.append(f"POST answers {res['status']}, {res['post_errors']} errors "
                        f"{res['post_error_examples']}")
    if res["received"] != n or res["missing"]:
        problems.append(f"{res['received']} of {n} delivered, {res['missing']} missing "
                        f"(e.g. n={res['missing_examples']})")
    for k in ("duplicates", "wrong_customer", "unknown", "bad_messages", "sent_mismatch",
              "closed_early"):
        if res[k]:
            problems.append(f"{res[k]} {k.replace('_', ' ')} "
                            f"{res['bad_examples'] if k in ('unknown', 'bad_messages') else ''}"
                            f"{res['close_codes'] if k == 'closed_early' else ''}")
    if problems:
        raise BenchError(f"{what}: " + "; ".join(problems) + f"; work dir {work}")


def e2e_engine_row(bootstrap, workroot, redis_url, customers, mode, name):
    """One engine run: source-http and the trimmed websocket pipeline on a
    fresh topic, bench/e2e-load.js with `customers` clients; mode "rate"
    (E2E_RATE events/s for the window) or "burst" (one event per customer)."""
    tag = uuid.uuid4().hex[:8]
    topic = f"bench-e2e-{tag}"
    key_prefix = f"bench-e2e-{tag}:"
    work = Path(tempfile.mkdtemp(prefix=f"e2e-{mode}-{customers}-", dir=workroot))
    schemas = work / "schemas"
    schemas.mkdir()
    schema = json.loads(INGEST_SCHEMA.read_text())
    schema["title"] = topic
    (schemas / f"{topic}.json").write_text(json.dumps(schema, indent=2))
    create_topic(bootstrap, topic)
    http_port, ws_port = free_port(), free_port()
    cfg = engine_config(bootstrap)
    if redis_url:
        cfg["redis_url"] = redis_url
    need = customers + 256
    try:
        eng = Engine(work, cfg, e2e_pipelines(topic, schemas, http_port, ws_port, key_prefix,
                                              tag)).start()
        try:
            wait_http(http_port, eng)
            wait_ready(admin_port_of(cfg), eng)
            pid = eng.pid()
            soft, hard = nofile_limits(pid)
            raised = None
            if 0 <= soft < need:
                # The engine does not raise its own soft limit (see bench/README.md).
                import resource
                new = need if hard < 0 or hard >= need else hard
                resource.prlimit(pid, resource.RLIMIT_NOFILE, (new, hard))
                raised = new
                log(f"{name}: the engine's soft RLIMIT_NOFILE is {soft}, below the {need} "
                    f"this row needs; raised to {new} from here (prlimit)")
            e2e_warmup(http_port, topic)
            end = time.monotonic() + 30
            while metric_sum(admin_port_of(cfg), "sink_websocket_pushes_total") < E2E_WARMUP:
                eng.check_alive("during the warm-up")
                if time.monotonic() > end:
                    raise BenchError(f"{name}: the warm-up events were not pushed within 30s:\n"
                                     f"{eng.tail()}")
                time.sleep(0.05)
            load = {"ws": f"ws://127.0.0.1:{ws_port}/ws",
                    "post": f"http://127.0.0.1:{http_port}/v1/events/{topic}",
                    "secret": E2E_SECRET, "customers": customers, "mode": mode,
                    "rate": E2E_RATE, "duration_s": e2e_window(), "events": customers}
            res, samp = run_load(load, work, pid, lambda: eng.check_alive("during the load"),
                                 name)
            pushed = metric_sum(admin_port_of(cfg), "sink_websocket_pushes_total")
            usage, stop_s = eng.stop()
        finally:
            eng.kill()
    finally:
        if os.environ.get("BENCH_KEEP") != "1":
            topic_admin(bootstrap, "delete-topic", topic)
            if redis_url:
                redis_cleanup(redis_url, key_prefix)
    if pushed != res["events"] + E2E_WARMUP:
        raise BenchError(f"{name}: the sink counted {pushed:.0f} pushes, expected "
                         f"{res['events'] + E2E_WARMUP}; work dir {work}")
    return e2e_row(name, res, samp, {"redis": bool(redis_url), "engine_nofile_soft": soft,
                                     "engine_nofile_hard": hard, "nofile_raised_to": raised,
                                     "peak_rss_mib": usage.ru_maxrss / 1024,
                                     "shutdown_s": stop_s, "topic": topic}), work


def e2e_window():
    return max(5.0, 20 * env_float("BENCH_SCALE", 1.0))


def e2e_row(name, res, samp, extra):
    n = res["events"]
    r = {"scenario": name, "records": n, "clients": res["customers"],
         "events_per_s": n / res["send_s"] if res["send_s"] else None,
         "delivered_per_s": n / res["deliver_s"] if res["deliver_s"] else None,
         "wall_s": res["deliver_s"],
         **{k: res[k] for k in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "min_ms",
                                "late_sends", "connect_s", "send_s", "deliver_s",
                                "tool_loop_delay_p99_ms", "tool_loop_delay_max_ms")},
         **samp, **extra,
         "checks": {k: res[k] for k in ("received", "missing", "duplicates", "wrong_customer",
                                        "unknown", "bad_messages", "closed_early", "status")}}
    return r


def e2e_node_row(bootstrap, workroot, customers):
    """The reference: bench/node-e2e-server.js (kafkajs producer and consumer,
    ws server) loaded the same way."""
    tag = uuid.uuid4().hex[:8]
    topic = f"bench-e2e-node-{tag}"
    work = Path(tempfile.mkdtemp(prefix="e2e-node-", dir=workroot))
    logp = work / "node.log"
    rufile = work / "node.rusage"
    create_topic(bootstrap, topic)
    name = f"Node.js kafkajs + ws, {customers:,} clients, {E2E_RATE:,}/s (reference)"
    try:
        with open(logp, "wb") as logf:
            proc = subprocess.Popen(measured(["node", BENCH / "node-e2e-server.js", bootstrap,
                                              topic, f"bench-e2e-node-{tag}", E2E_SECRET],
                                             rufile),
                                    stdout=subprocess.PIPE, stderr=logf, preexec_fn=raise_nofile)
        try:
            rd = LineReader(proc, "node-e2e-server.js", logp)
            ports, ready = None, False
            while not (ports and ready):
                line = rd.line(90)
                if line.startswith("LISTENING "):
                    ports = dict(kv.split("=") for kv in line.split()[1:])
                elif line == "READY":
                    ready = True
            pid = child_of(proc.pid)

            def alive():
                if proc.poll() is not None:
                    raise BenchError(f"node-e2e-server.js exited:\n{tail(logp)}")
            e2e_warmup(int(ports["http"]), topic)
            time.sleep(1.0)
            load = {"ws": f"ws://127.0.0.1:{ports['ws']}/ws",
                    "post": f"http://127.0.0.1:{ports['http']}/v1/events/{topic}",
                    "secret": E2E_SECRET, "customers": customers, "mode": "rate",
                    "rate": E2E_RATE, "duration_s": e2e_window(), "events": customers}
            res, samp = run_load(load, work, pid, alive, name)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            usage = read_usage(proc, rufile)
            if usage.status != 0:
                raise BenchError(f"node-e2e-server.js exited {usage.status}:\n{tail(logp)}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
    finally:
        if os.environ.get("BENCH_KEEP") != "1":
            topic_admin(bootstrap, "delete-topic", topic)
    return e2e_row(name, res, samp, {"peak_rss_mib": usage.ru_maxrss / 1024,
                                     "topic": topic}), work


E2E_COLUMNS = [("scenario", "scenario", "{}"), ("events", "records", "{:,}"),
               ("clients", "clients", "{:,}"), ("sent/s", "events_per_s", "{:,.0f}"),
               ("delivered/s", "delivered_per_s", "{:,.0f}"),
               ("p50 ms", "p50_ms", "{:.2f}"), ("p99 ms", "p99_ms", "{:.2f}"),
               ("max ms", "max_ms", "{:.2f}"), ("CPU s", "cpu_s", "{:.2f}"),
               ("CPU µs/event", "cpu_us_per_record", "{:.1f}"),
               ("RSS before MiB", "rss_before_clients_mib", "{:.1f}"),
               ("RSS held MiB", "rss_clients_held_mib", "{:.1f}"),
               ("KiB/conn", "kib_per_connection", "{:.1f}"),
               ("p99 vs ref", "p99_vs_reference", "{:.2f}"),
               ("CPU vs ref", "cpu_vs_reference", "{:.2f}")]


def e2e_scenarios(bootstrap, keep, workroot):
    """POST → source-http → Kafka → websocket sink → clients, against the
    Node.js kafkajs + ws reference: latency at E2E_RATE events/s over
    E2E_CUSTOMERS clients (engine with Redis fan-out, and in-process), then
    E2E_WIDE_CUSTOMERS connections held and a burst of one event each. Prints
    a table; returns what goes into latest.json under "e2e"."""
    if not shutil.which("node"):
        raise BenchError("node not found (scripts/install-deps)")
    if not (ROOT / ".deps" / "node" / "node_modules" / "ws").exists():
        raise BenchError("the ws npm package is not installed (run scripts/install-deps)")
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        raise BenchError("REDIS_URL not set (bench/run starts redis: scripts/redis-start)")
    window = e2e_window()
    with open("/proc/loadavg") as f:
        load_at_start = f.read().split()[:3]
    log(f"end to end: {E2E_RATE}/s for {window:g}s over {E2E_CUSTOMERS} clients; then "
        f"{E2E_WIDE_CUSTOMERS} clients and a burst of one event each")
    rows = []
    row_names = ("node", "rate-redis", "rate-local", "wide-redis", "wide-local")
    wanted = set(filter(None, (os.environ.get("BENCH_E2E_ROWS") or ",".join(row_names))
                        .replace(" ", "").split(",")))
    if not wanted <= set(row_names):
        raise BenchError(f"BENCH_E2E_ROWS: expected a comma-separated subset of "
                         f"{','.join(row_names)}, got {os.environ.get('BENCH_E2E_ROWS')!r}")
    specs = [
        ("node", None),
        ("rate", redis_url, E2E_CUSTOMERS,
         f"connectd, {E2E_CUSTOMERS:,} clients, {E2E_RATE:,}/s, Redis fan-out"),
        ("rate", None, E2E_CUSTOMERS,
         f"connectd, {E2E_CUSTOMERS:,} clients, {E2E_RATE:,}/s, in-process"),
        ("burst", redis_url, E2E_WIDE_CUSTOMERS,
         f"connectd, {E2E_WIDE_CUSTOMERS:,} clients held, burst of {E2E_WIDE_CUSTOMERS:,}, "
         f"Redis fan-out"),
        ("burst", None, E2E_WIDE_CUSTOMERS,
         f"connectd, {E2E_WIDE_CUSTOMERS:,} clients held, burst of {E2E_WIDE_CUSTOMERS:,}, "
         f"in-process"),
    ]
    specs = [spec for spec, row in zip(specs, row_names) if row in wanted]
    for spec in specs:
        if spec[0] == "node":
            r, work = e2e_node_row(bootstrap, workroot, E2E_CUSTOMERS)
        else:
            r, work = e2e_engine_row(bootstrap, workroot, spec[1], spec[2], spec[0], spec[3])
        log(f"{r['scenario']}: p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, max "
            f"{r['max_ms']:.2f} ms, {r['delivered_per_s']:,.0f} delivered/s, "
            f"{r['cpu_us_per_record']:.1f} CPU µs/event, RSS {r['rss_before_clients_mib']:.1f} → "
            f"{r['rss_clients_held_mib']:.1f} MiB with the clients held")
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
        rows.append(r)
    ref = rows[0] if "node" in wanted else None
    for r in rows if ref else []:
        if r["clients"] == ref["clients"]:
            r["p99_vs_reference"] = r["p99_ms"] / ref["p99_ms"]
            r["p50_vs_reference"] = r["p50_ms"] / ref["p50_ms"]
            r["cpu_vs_reference"] = r["cpu_us_per_record"] / ref["cpu_us_per_record"]
    print()
    print(f"end to end: POST → source-http → Kafka ({PARTITIONS} partitions) → websocket sink → "
          f"a ws client per customer, latency from the POST's send to the client's receipt "
          f"(one clock); {E2E_RATE:,} events/s for {window:g}s; engine CPU over the sending; "
          f"RSS before the clients connected and with all of them held; one run each; load "
          f"average at start {' '.join(load_at_start)}")
    print_overrides("BENCH_ENGINE_CONFIG", "BENCH_E2E_PIPELINE")
    print(table(rows, E2E_COLUMNS))
    print()
    for r in rows[1:] if ref else rows:
        if "p99_vs_reference" in r:
            print(f"{r['scenario']}: p50 {r['p50_ms']:.2f} ms / p99 {r['p99_ms']:.2f} ms / max "
                  f"{r['max_ms']:.2f} ms (target p99 < 10 ms) against Node.js's "
                  f"{ref['p50_ms']:.2f} / {ref['p99_ms']:.2f} / {ref['max_ms']:.2f} ms; "
                  f"{r['cpu_us_per_record']:.1f} CPU µs/event = "
                  f"{ref['cpu_us_per_record'] / r['cpu_us_per_record']:.1f}× less than Node.js's "
                  f"{ref['cpu_us_per_record']:.1f}; the load tool's own event-loop delay p99 "
                  f"{r['tool_loop_delay_p99_ms']:.1f} ms, max {r['tool_loop_delay_max_ms']:.1f} ms "
                  f"(Node.js row: {ref['tool_loop_delay_p99_ms']:.1f} / "
                  f"{ref['tool_loop_delay_max_ms']:.1f}).")
        else:
            print(f"{r['scenario']}: {r['clients']:,} connections held in "
                  f"{r['rss_clients_held_mib']:.1f} MiB RSS (target < 100 MB; "
                  f"{r['rss_before_clients_mib']:.1f} MiB before they connected, "
                  f"{r['kib_per_connection']:.1f} KiB each, {r['rss_after_mib']:.1f} MiB after "
                  f"the burst); {r['records']:,} events delivered at {r['delivered_per_s']:,.0f}/s "
                  f"(first POST to last receipt), p50 {r['p50_ms']:.1f} / p99 "
                  f"{r['p99_ms']:.1f} ms; engine soft RLIMIT_NOFILE {r['engine_nofile_soft']}"
                  + (f", raised by bench.py to {r['nofile_raised_to']}"
                     if r["nofile_raised_to"] else "") + ".")
    print("every event was answered 202 and delivered exactly once, to exactly its customer's "
          "client, which stayed connected.")
    return {"rate": E2E_RATE, "window_s": window, "table": rows, "target_p99_ms": 10,
            "loadavg_at_start": load_at_start,
            "target_rss_10k_mib": 100}


# --------------------------------------------------------------------------- reporting

COLUMNS = [("scenario", "scenario", "{}"), ("records", "records", "{:,}"),
           ("wall s", "wall_s", "{:.2f}"), ("records/s", "records_per_s", "{:,.0f}"),
           ("CPU s", "cpu_s", "{:.2f}"), ("CPU µs/rec", "cpu_us_per_record", "{:.2f}"),
           ("peak RSS MiB", "peak_rss_mib", "{:.1f}"), ("vs reference", "vs_reference", "{:.2f}"),
           ("1st rec s", "first_record_s", "{:.2f}")]


def fmt(v, f):
    if v is None:
        return "-"
    return f.format(v)


INGEST_COLUMNS = [("scenario", "scenario", "{}"), ("requests", "requests", "{:,}"),
                  ("events", "records", "{:,}"), ("wall s", "wall_s", "{:.2f}"),
                  ("requests/s", "requests_per_s", "{:,.0f}"),
                  ("events/s", "records_per_s", "{:,.0f}"), ("CPU s", "cpu_s", "{:.2f}"),
                  ("CPU µs/req", "cpu_us_per_request", "{:.1f}"),
                  ("CPU µs/event", "cpu_us_per_record", "{:.2f}"),
                  ("p50 ms", "p50_ms", "{:.2f}"), ("p99 ms", "p99_ms", "{:.2f}"),
                  ("peak RSS MiB", "peak_rss_mib", "{:.1f}"),
                  ("vs kcat -P", "vs_reference", "{:.2f}")]


def table(rows, columns=None):
    columns = columns or COLUMNS
    cells = [[h for h, _, _ in columns]]
    for r in rows:
        cells.append([fmt(r.get(k), f) for _, k, f in columns])
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = []
    for j, c in enumerate(cells):
        parts = [c[0].ljust(widths[0])] + [c[i].rjust(widths[i]) for i in range(1, len(c))]
        lines.append(" | ".join(parts))
        if j == 0:
            lines.append("-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def median_run(runs):
    """The run with the median records/s (lower median for an even count), so a
    row's figures all come from one run."""
    s = sorted(runs, key=lambda r: r["records_per_s"])
    return dict(s[(len(s) - 1) // 2])


def host_info():
    info = {"nproc": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/loadavg") as f:
            info["loadavg_at_start"] = f.read().split()[:3]
    except OSError:
        pass
    for key, cmd in (("connectd", [str(CONNECTD), "--version"]), ("kcat", ["kcat", "-V"]),
                     ("git", ["git", "-C", str(ROOT), "describe", "--always", "--dirty"])):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            out = (p.stdout or p.stderr).strip().splitlines()
            if key == "kcat":
                out = [l for l in out if l.startswith("Version")]
            info[key] = out[0] if out else None
        except (OSError, subprocess.SubprocessError):
            info[key] = None
    return info


# --------------------------------------------------------------------------- main

def main():
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    if not bootstrap:
        raise BenchError("KAFKA_BOOTSTRAP not set (run through bench/run or make bench)")
    if not CONNECTD.exists():
        raise BenchError(f"{CONNECTD} not built (run make bench)")
    scale = env_float("BENCH_SCALE", 1.0)
    if scale <= 0:
        raise BenchError("BENCH_SCALE must be positive")
    repeat = int(env_float("BENCH_REPEAT", 3))
    if repeat < 1:
        raise BenchError("BENCH_REPEAT must be at least 1")
    keep = os.environ.get("BENCH_KEEP") == "1"
    n = max(1, round(BASE_RECORDS * scale))
    overrides = {k: env_json(k) for k in ("BENCH_ENGINE_CONFIG", "BENCH_FILE_PIPELINE",
                                          "BENCH_SCRIPTED_PIPELINE", "BENCH_HTTP_PIPELINE",
                                          "BENCH_DDB_PIPELINE", "BENCH_E2E_PIPELINE")
                 if env_json(k)}
    if IGNORE_SIGPIPE:
        overrides["BENCH_IGNORE_SIGPIPE"] = 1
    only = set(filter(None, (os.environ.get("BENCH_ONLY") or ",".join(SCENARIO_GROUPS))
                      .replace(" ", "").split(",")))
    if not only or only - set(SCENARIO_GROUPS):
        raise BenchError(f"BENCH_ONLY: expected a comma-separated subset of "
                         f"{','.join(SCENARIO_GROUPS)}")
    if "consume" in only:
        fixtures_dir()  # fail before producing anything if the scripted sink is not built
    started = time.monotonic()

    RESULTS.mkdir(parents=True, exist_ok=True)
    workroot = Path(tempfile.mkdtemp(prefix="bench-", dir=BUILD))
    run_id = uuid.uuid4().hex[:8]
    topic = f"bench-{run_id}"
    ok = False
    produced = False
    try:
        host = host_info()
        problems, consume_doc, ingest_doc, ddb_doc = [], {}, {}, {}
        ids = None
        if "consume" in only:
            produced = True
            log(f"topic {topic}: {n} records over {KEYS} keys, {PARTITIONS} partitions; "
                f"{repeat} interleaved runs each; work dir {workroot}")
            create_topic(bootstrap, topic)
            ids, avg_value = produce(bootstrap, topic, n, run_id, workroot)
            parts = topic_partitions(bootstrap, topic)
            if parts != PARTITIONS:
                raise BenchError(f"topic {topic} has {parts} partitions, expected {PARTITIONS}")
            # Unmeasured warm-up: checks what was produced and warms the broker's
            # page cache and JIT, so the first measured run is not the odd one out;
            # the group consume makes a fresh broker create __consumer_offsets now.
            run_kcat(bootstrap, topic, n, workroot)
            run_kcat(bootstrap, topic, n, workroot, group=f"bench-warmup-{run_id}")

            runs = {"kcat": [], "kcat_group": [], "file": [], "scripted0": [], "scripted1": []}
            for rep in range(repeat):
                k = run_kcat(bootstrap, topic, n, workroot)
                runs["kcat"].append(k)
                log(f"run {rep + 1}/{repeat}: kcat {k['records_per_s']:,.0f} rec/s, "
                    f"{k['cpu_us_per_record']:.2f} µs/rec")
                g = run_kcat(bootstrap, topic, n, workroot,
                             group=f"bench-kcat-{uuid.uuid4().hex[:10]}")
                runs["kcat_group"].append(g)
                log(f"run {rep + 1}/{repeat}: kcat -G {g['records_per_s']:,.0f} rec/s, "
                    f"{g['cpu_us_per_record']:.2f} µs/rec, first record after "
                    f"{g['first_record_s']:.2f}s")
                f, work = run_engine_file(bootstrap, topic, n, ids, workroot, rep)
                runs["file"].append(f)
                log(f"run {rep + 1}/{repeat}: sink-file {f['records_per_s']:,.0f} rec/s, "
                    f"{f['cpu_us_per_record']:.2f} µs/rec, first record after "
                    f"{f['first_record_s']:.2f}s")
                if not keep:
                    shutil.rmtree(work, ignore_errors=True)
                for key, rate in (("scripted0", 0.0), ("scripted1", 0.01)):
                    sr, work = run_engine_scripted(bootstrap, topic, n, ids, workroot, rep, rate)
                    runs[key].append(sr)
                    log(f"run {rep + 1}/{repeat}: scripted {rate:.0%} {sr['records_per_s']:,.0f} "
                        f"rec/s, {sr['cpu_us_per_record']:.2f} µs/rec, first record after "
                        f"{sr['first_record_s']:.2f}s, {sr['key_retries_logged']} key retries, "
                        f"{sr['written_out_of_partition_order']} records behind"
                        + (f"; {sr['duplicates']} DUPLICATES" if sr["duplicates"] else "")
                        + (f"; {sr['order_violations']} ORDER VIOLATIONS"
                           if sr["order_violations"] else ""))
                    if not keep and not sr["duplicates"] and not sr["order_violations"]:
                        shutil.rmtree(work, ignore_errors=True)

            perf_report = None
            if os.environ.get("BENCH_PERF") == "1":
                perf_report = profile(bootstrap, topic, n, ids, workroot)

            ref = median_run(runs["kcat"])
            ref["vs_reference"] = 1.0
            grp = median_run(runs["kcat_group"])
            grp["vs_reference"] = grp["records_per_s"] / ref["records_per_s"]
            fil = median_run(runs["file"])
            fil["vs_reference"] = fil["records_per_s"] / ref["records_per_s"]
            fil["cpu_vs_reference"] = fil["cpu_us_per_record"] / ref["cpu_us_per_record"]
            fil["vs_group_reference"] = fil["records_per_s"] / grp["records_per_s"]
            sc0 = median_run(runs["scripted0"])
            sc1 = median_run(runs["scripted1"])
            for r in (sc0, sc1):
                r["vs_reference"] = r["records_per_s"] / ref["records_per_s"]
                r["cpu_vs_reference"] = r["cpu_us_per_record"] / ref["cpu_us_per_record"]
                r["vs_group_reference"] = r["records_per_s"] / grp["records_per_s"]
            sc1["vs_no_failures"] = sc1["records_per_s"] / sc0["records_per_s"]
            # Delivery problems in any run (not only the median one) fail the run,
            # after the table is printed and latest.json written.
            problems = [f"{r['scenario']}: {r[k]} {what} (e.g. {'; '.join(r[ex][:2])}), "
                        f"output kept in {r['work_dir']}"
                        for key in ("scripted0", "scripted1") for r in runs[key]
                        for k, ex, what in (
                            ("duplicates", "duplicate_examples", "duplicate lines"),
                            ("order_violations", "order_violation_examples",
                             "per-key order violations"))
                        if r[k]]
            rows = [ref, grp, fil, sc0, sc1]
            for r in rows:
                r.pop("work_dir", None)
            for rs in runs.values():
                for r in rs:
                    if not (r.get("duplicates") or r.get("order_violations")):
                        r.pop("work_dir", None)

            print()
            print(f"connectd bench: {n:,} records of ~{avg_value:.0f} B over {KEYS:,} keys, "
                  f"{PARTITIONS} partitions, broker {bootstrap}; median of {repeat} runs")
            if overrides:
                print(f"overrides (not the default scenario): {json.dumps(overrides)}")
            print(table(rows))
            print()
            print(f"consume → sink-file reaches {fil['vs_reference']:.1%} of kcat's raw consume rate "
                  f"(target ≥ 50%) and {fil['vs_group_reference']:.1%} of kcat -G's, "
                  f"at {fil['cpu_vs_reference']:.1f}× kcat's CPU per record; first record after "
                  f"{fil['first_record_s']:.2f}s (kcat -G: {grp['first_record_s']:.2f}s).")
            print(f"consume → scripted sink reaches {sc0['vs_reference']:.1%} of kcat's rate with no "
                  f"failures ({sc0['cpu_vs_reference']:.1f}× its CPU per record) and "
                  f"{sc1['vs_reference']:.1%} with 1% transient failures "
                  f"({sc1['cpu_vs_reference']:.1f}× its CPU per record): 1% failures run at "
                  f"{sc1['vs_no_failures']:.2f}× the 0% rate (retry backoff "
                  f"{sc1['retry']['initial_ms']}–{sc1['retry']['max_ms']} ms).")
            dup_total = sum(r["duplicates"] for k in ("scripted0", "scripted1") for r in runs[k])
            ord_total = sum(r["order_violations"] for k in ("scripted0", "scripted1")
                            for r in runs[k])
            print(f"scripted sink delivery over all {2 * repeat} runs: every record present, "
                  f"{dup_total} duplicate lines, {ord_total} per-key order violations.")
            consume_doc = {
                "avg_value_bytes": avg_value,
                "scenarios": [
                    {**ref, "reference": None, "runs": runs["kcat"]},
                    {**grp, "reference": ref["scenario"], "runs": runs["kcat_group"]},
                    {**fil, "reference": ref["scenario"], "target_vs_reference": 0.5,
                     "runs": runs["file"]},
                    {**sc0, "reference": ref["scenario"], "runs": runs["scripted0"]},
                    {**sc1, "reference": ref["scenario"], "runs": runs["scripted1"]},
                ],
                "table": rows,
                "perf_report": perf_report,
            }
        if "dynamodb" in only:
            if ids is None:
                produced = True
                log(f"topic {topic}: {n} records over {KEYS} keys, {PARTITIONS} partitions; "
                    f"work dir {workroot}")
                create_topic(bootstrap, topic)
                ids, avg_value = produce(bootstrap, topic, n, run_id, workroot)
                run_kcat(bootstrap, topic, n, workroot)
                run_kcat(bootstrap, topic, n, workroot, group=f"bench-warmup-{run_id}")
            ddb_doc = ddb_scenarios(bootstrap, topic, n, ids, repeat, keep, workroot, overrides)
        sns_doc = None
        if "sns" in only:
            if ids is None:
                produced = True
                log(f"topic {topic}: {n} records over {KEYS} keys, {PARTITIONS} partitions; "
                    f"work dir {workroot}")
                create_topic(bootstrap, topic)
                ids, avg_value = produce(bootstrap, topic, n, run_id, workroot)
                run_kcat(bootstrap, topic, n, workroot)
            sns_doc = sns_scenarios(bootstrap, topic, n, ids, repeat, keep, workroot)
        if "ingest" in only:
            ingest_doc = ingest_scenarios(bootstrap, scale, keep, workroot, overrides)
        idle_doc = idle_scenarios(bootstrap, scale, keep, workroot) if "idle" in only else None
        e2e_doc = e2e_scenarios(bootstrap, keep, workroot) if "e2e" in only else None
        doc = {
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "scale": scale, "repeat": repeat, "records": n, "keys": KEYS,
            "partitions": PARTITIONS, "topic": topic, "scenarios_run": sorted(only),
            "bootstrap": bootstrap, "host": host, "overrides": overrides,
            "columns": [h for h, _, _ in COLUMNS],
            "delivery_problems": problems,
            "elapsed_s": time.monotonic() - started,
            **consume_doc,
        }
        if ddb_doc:
            doc["dynamodb"] = ddb_doc
        if ingest_doc:
            doc["ingest"] = ingest_doc
        if sns_doc:
            doc["sns"] = sns_doc
        if idle_doc:
            doc["idle"] = idle_doc
        if e2e_doc:
            doc["e2e"] = e2e_doc
        (RESULTS / "latest.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        print(f"written {RESULTS.relative_to(ROOT) / 'latest.json'} "
              f"({time.monotonic() - started:.0f}s)")
        if problems:
            raise BenchError("scripted sink delivery check failed:\n  " + "\n  ".join(problems))
        ok = True
    finally:
        if not keep and produced:
            err = topic_admin(bootstrap, "delete-topic", topic)
            if err:
                log(f"could not delete topic {topic}: {err}")
        if ok and not keep:
            shutil.rmtree(workroot, ignore_errors=True)
        else:
            log(f"work files kept in {workroot}")


def profile(bootstrap, topic, n, ids, workroot):
    """One extra engine run under `perf record -g`; its report goes to
    bench/results/perf-file.txt: CPU by thread and library, then the hottest
    symbols (self time), then the hottest call chains (inclusive time)."""
    if not shutil.which("perf"):
        log("BENCH_PERF=1 but perf is not installed; skipped")
        return None
    data = workroot / "perf.data"
    r, _ = run_engine_file(bootstrap, topic, n, ids, workroot, "perf", perf=data)
    out = RESULTS / "perf-file.txt"
    base = ["perf", "report", "-i", str(data), "--stdio", "-g", "none"]
    sections = [
        ("CPU by thread and library", base + ["--no-children", "--sort", "comm,dso"]),
        ("hottest symbols (self)", base + ["--no-children", "--sort", "dso,symbol",
                                           "--percent-limit", "0.5"]),
        ("hottest call chains (inclusive)", base + ["--children", "--sort", "symbol",
                                                    "--percent-limit", "3"]),
    ]
    with open(out, "w") as f:
        f.write(f"# perf profile: connectd, sink-file scenario, {n} records; "
                f"{r['records_per_s']:,.0f} rec/s and {r['cpu_us_per_record']:.2f} CPU µs/rec "
                f"under perf\n")
        for title, cmd in sections:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            body = [l for l in p.stdout.splitlines() if l.strip() and not l.startswith("#")]
            f.write(f"\n## {title}\n" + "\n".join(body) + "\n")
    log(f"perf profile of one sink-file run ({r['records_per_s']:,.0f} rec/s under perf) "
        f"written to {out.relative_to(ROOT)}")
    return str(out.relative_to(ROOT))


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        log(f"error: {e}")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
