"""Integration harness: drives the built connectd binary against the real
Apache Kafka broker that scripts/run-tests started (its address and SCRAM
credentials arrive in the environment from build/stack/kafka.env), and checks
what happened with kcat, a client we did not write."""
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("CONNECTD_BUILD_DIR", ROOT / "build"))
CONNECTD = BUILD / "connectd"
FIXTURES = BUILD / "tests" / "fixtures"


def kafka_env():
    env = {k: os.environ.get(k) for k in (
        "KAFKA_BOOTSTRAP", "KAFKA_SASL_BOOTSTRAP", "KAFKA_CA_PEM",
        "KAFKA_SCRAM_USER", "KAFKA_SCRAM_PASSWORD")}
    missing = [k for k, v in env.items() if not v]
    if missing:
        pytest.fail(f"run through scripts/run-tests (make test): {missing} not set")
    return env


@pytest.fixture(scope="session")
def kafka():
    return kafka_env()


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def kcat(args, input_bytes=None, timeout=120, check=True):
    p = subprocess.run(["kcat", *args], input=input_bytes, capture_output=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"kcat {' '.join(args)} failed: {p.stderr.decode(errors='replace')}")
    return p


def kafka_admin(*args, timeout=120, attempts=5):
    """Runs scripts/kafka-admin.js.  A broker that has just started may
    still be loading its coordinator: a failure is tried again a few times."""
    for attempt in range(attempts):
        p = subprocess.run(["node", str(ROOT / "scripts" / "kafka-admin.js"), *map(str, args)],
                           capture_output=True, timeout=timeout)
        if p.returncode == 0:
            return p.stdout.decode()
        time.sleep(1 + attempt)
    raise AssertionError(f"kafka-admin {' '.join(map(str, args))}: "
                         + p.stderr.decode(errors="replace"))


def create_topic(kafka, topic, partitions=3):
    """Creates a topic (through kafkajs) so tests do not depend on
    auto-creation timing."""
    kafka_admin("create-topic", topic, partitions)


def produce(kafka, topic, records, sasl=False):
    """records: iterable of (key or None, value bytes).  Produced with kcat,
    key and value separated by a unit separator, one record per line."""
    lines = []
    for key, value in records:
        assert b"\n" not in value and b"\x1f" not in value
        k = b"" if key is None else key.encode()
        lines.append(k + b"\x1f" + value)
    data = b"\n".join(lines) + b"\n"
    args = ["-b", kafka["KAFKA_BOOTSTRAP"], "-P", "-t", topic, "-K", "\x1f",
            "-X", "linger.ms=20", "-X", "queue.buffering.max.messages=200000"]
    kcat(args, input_bytes=data, timeout=300)


def consume_all(kafka, topic, fmt="%p\t%o\t%k\t%s\n", expect=None, timeout=60):
    """Reads a topic from the beginning to its end with kcat."""
    deadline = time.time() + timeout
    while True:
        p = kcat(["-b", kafka["KAFKA_BOOTSTRAP"], "-C", "-t", topic, "-o", "beginning", "-e",
                  "-q", "-f", fmt], timeout=timeout, check=False)
        out = p.stdout.decode(errors="replace")
        if expect is None or out.count("\n") >= expect or time.time() > deadline:
            return out
        time.sleep(0.5)


def committed_offsets(kafka, group, topic):
    """The group's committed offsets per partition as kafkajs reads them from
    the broker (-1 when nothing was committed)."""
    return {int(k): v for k, v in json.loads(kafka_admin("offsets", group, topic)).items()}


class Engine:
    """One connectd process with its own config directory."""

    def __init__(self, workdir: Path, kafka_props: dict, pipelines: dict, engine_extra=None,
                 env=None):
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        # Port 0: every engine of a test gets its own admin port.
        cfg = {"kafka": kafka_props, "pipelines_dir": ".", "log_level": "info",
               "commit_interval_ms": 200, "shutdown_grace_ms": 10000,
               "admin_listen": "127.0.0.1:0"}
        cfg.update(engine_extra or {})
        (self.dir / "connectd.json").write_text(json.dumps(cfg, indent=2))
        for name, body in pipelines.items():
            text = body if isinstance(body, str) else json.dumps(body, indent=2)
            (self.dir / f"{name}.json").write_text(text)
        # A value of None removes the variable from the engine's environment.
        self.env = {k: v for k, v in dict(os.environ, **(env or {})).items() if v is not None}
        self.proc = None
        self.log_path = self.dir / "connectd.log"
        self.runs = 0

    def start(self):
        self.runs += 1
        self.log = open(self.log_path, "ab")
        self.log.write(f"---- run {self.runs}\n".encode())
        self.log.flush()
        self.proc = subprocess.Popen([str(CONNECTD), "run", "-c", str(self.dir / "connectd.json")],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        return self

    def admin_url(self, timeout=30):
        """The admin API's base URL, read from the engine's log."""
        import re
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.findall(r"admin API on (127\.0\.0\.1:\d+)", self.logs())
            if m:
                return "http://" + m[-1]
            time.sleep(0.05)
        raise AssertionError("admin API address not logged:\n" + self.logs()[-2000:])

    def logs(self):
        return self.log_path.read_text(errors="replace")

    def wait_log(self, needle, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if needle in self.logs():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"connectd exited {self.proc.returncode} before "
                                     f"'{needle}':\n{self.logs()[-4000:]}")
            time.sleep(0.1)
        raise AssertionError(f"'{needle}' not logged within {timeout}s:\n{self.logs()[-4000:]}")

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"connectd did not exit within {timeout}s of {sig}:\n"
                                 f"{self.logs()[-4000:]}")
        self.log.close()
        return rc

    def kill(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()


@pytest.fixture
def engines(tmp_path):
    made = []

    def make(kafka_props, pipelines, **kw):
        e = Engine(tmp_path / f"engine{len(made)}", kafka_props, pipelines, **kw)
        made.append(e)
        return e

    yield make
    for e in made:
        if e.proc and e.proc.poll() is None:
            e.proc.kill()
            e.proc.wait()
        sanitizer = [l for l in e.logs().splitlines()
                     if "ERROR: AddressSanitizer" in l or "runtime error:" in l
                     or "ERROR: LeakSanitizer" in l]
        assert not sanitizer, "sanitizer reports:\n" + "\n".join(sanitizer)


def wait_for_lines(path: Path, n, timeout=120, proc=None):
    deadline = time.time() + timeout
    count = 0
    while time.time() < deadline:
        if path.exists():
            with open(path, "rb") as f:
                count = sum(1 for _ in f)
            if count >= n:
                return count
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.02)
    return count


def read_ndjson(path: Path):
    out = []
    with open(path, "rb") as f:
        for line in f:
            out.append(json.loads(line))
    return out
