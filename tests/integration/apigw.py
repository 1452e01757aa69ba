"""An API Gateway WebSocket API on loopback for integration tests:
serverless-offline (npm, under .deps/node) runs tests/apigw/serverless.yml,
whose $connect / $disconnect handlers forward to source-http's
/v1/ws/connect and /v1/ws/disconnect, and whose management endpoint
POST /@connections/{id} is what sink-websocket calls.  Also a WebSocket
client (tests/apigw/ws-client.js, npm's `ws`) to connect as a browser would.

    with serverless_offline(tmp_path, connectd_url, api_key, jwt_secret) as api:
        client = WsClient(api.ws_url(token))
        ...
        api.post_to_connection(connection_id, b"...")   # -> HTTP status

Every listener is on 127.0.0.1 on ports picked free at start; the process
runs in its own process group, killed as a whole at stop."""
import base64
import contextlib
import hashlib
import hmac
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "tests" / "apigw"
NODE_MODULES = ROOT / ".deps" / "node" / "node_modules"
SERVERLESS = NODE_MODULES / "serverless" / "bin" / "serverless.js"
WS_CLIENT = SERVICE / "ws-client.js"

# The framework's phone-home features, all off: usage telemetry, update and
# deprecation notices, the interactive onboarding, the dashboard.
QUIET_ENV = {
    "SLS_TELEMETRY_DISABLED": "1",
    "SLS_TRACKING_DISABLED": "1",
    "SLS_NOTIFICATIONS_MODE": "off",
    "SLS_DEPRECATION_DISABLE": "*",
    "SLS_INTERACTIVE_SETUP_DISABLE": "1",
    "SERVERLESS_PLATFORM_STAGE": "",
    "CI": "true",
    "FORCE_COLOR": "0",
    "NO_COLOR": "1",
}


def free_ports(n):
    """n distinct free loopback ports (held together while picking, so they
    differ; another process could still take one before it is bound)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_jwt(claims, secret):
    """A JWT the test API's authorizer accepts (sub = the customerId)."""
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + \
        b64url(json.dumps(claims).encode())
    sig = hmac.new(secret.encode() if isinstance(secret, str) else secret, head.encode(),
                   hashlib.sha256).digest()
    return head + "." + b64url(sig)


class ServerlessOffline:
    """One serverless-offline process serving the test WebSocket API."""

    def __init__(self, workdir: Path, connectd_url, api_key=None, jwt_secret="test-secret"):
        self.dir = Path(workdir)
        self.connectd_url = connectd_url
        self.api_key = api_key
        self.jwt_secret = jwt_secret
        self.ws_port, self.http_port, self.lambda_port, self.alb_port = free_ports(4)
        self.proc = None
        self.log_path = self.dir / "serverless-offline.log"
        self.startup_seconds = None

    def start(self, timeout=90):
        if not SERVERLESS.exists():
            raise AssertionError(f"{SERVERLESS} missing: run scripts/install-deps "
                                 "(serverless, serverless-offline in scripts/node/package.json)")
        service = self.dir / "service"
        service.mkdir(parents=True, exist_ok=True)
        # A copy per run: the framework may write into its service directory,
        # and parallel runs must not share one.
        for name in ("serverless.yml", "handler.js"):
            shutil.copy(SERVICE / name, service / name)
        env = dict(os.environ, **QUIET_ENV)
        env.update({
            "CONNECTD_WS_URL": self.connectd_url,
            "CONNECTD_WS_API_KEY": self.api_key or "",
            "APIGW_JWT_SECRET": self.jwt_secret,
            "HOME": str(self.dir),  # the framework's ~/.serverlessrc and caches
            # Dummy credentials: nothing here talks to AWS.
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": "us-east-1",
        })
        cmd = ["node", str(SERVERLESS), "offline", "start", "--host", "127.0.0.1",
               "--websocketPort", str(self.ws_port), "--httpPort", str(self.http_port),
               "--lambdaPort", str(self.lambda_port), "--albPort", str(self.alb_port),
               "--noSponsor"]
        self.log = open(self.log_path, "ab")
        started = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=service, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        want = [f"Offline [websocket] listening on ws://127.0.0.1:{self.ws_port}",
                f"Offline [http for websocket] listening on http://127.0.0.1:{self.ws_port}"]
        deadline = started + timeout
        while True:
            text = self.logs()
            if all(w in text for w in want) and self._port_open(self.ws_port):
                break
            if self.proc.poll() is not None:
                self.stop()
                raise AssertionError(f"serverless-offline exited {self.proc.returncode} "
                                     f"before it was ready:\n{text[-4000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"serverless-offline not ready within {timeout}s:\n"
                                     f"{text[-4000:]}")
            time.sleep(0.05)
        self.startup_seconds = time.monotonic() - started
        return self

    @staticmethod
    def _port_open(port):
        with contextlib.closing(socket.socket()) as s:
            s.settimeout(1)
            return s.connect_ex(("127.0.0.1", port)) == 0

    def logs(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, needle, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if needle in self.logs():
                return
            time.sleep(0.05)
        raise AssertionError(f"'{needle}' not in serverless-offline's log:\n{self.logs()[-3000:]}")

    def stop(self, timeout=15):
        """SIGTERM to the whole process group, SIGKILL after timeout."""
        if not self.proc:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # Whatever of the group is left (the leader may exit before its children).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(timeout=timeout)
        self.log.close()
        return self.proc.returncode

    def ws_url(self, token=None):
        base = f"ws://127.0.0.1:{self.ws_port}/"
        return base if token is None else f"{base}?token={token}"

    def token(self, customer_id, ttl=600):
        return hs256_jwt({"sub": customer_id, "exp": int(time.time()) + ttl}, self.jwt_secret)

    def _management(self, method, connection_id, data=None):
        url = f"http://127.0.0.1:{self.ws_port}/@connections/{connection_id}"
        req = urllib.request.Request(url, method=method, data=data)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def post_to_connection(self, connection_id, data: bytes):
        """POST @connections/{id}, as sink-websocket does: (status, body)."""
        return self._management("POST", connection_id, data)

    def delete_connection(self, connection_id):
        return self._management("DELETE", connection_id)


@contextlib.contextmanager
def serverless_offline(workdir, connectd_url, api_key=None, jwt_secret="test-secret",
                       timeout=90):
    api = ServerlessOffline(workdir, connectd_url, api_key, jwt_secret)
    api.start(timeout=timeout)
    try:
        yield api
    finally:
        api.stop()


class WsClient:
    """A WebSocket connection through tests/apigw/ws-client.js; its events
    arrive on a queue as dicts ({"event": "open" | "message" | "close" |
    "unexpected-response" | "error", ...})."""

    def __init__(self, url, headers=None):
        args = ["node", str(WS_CLIENT), url] + [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self.events = queue.Queue()
        self.seen = []
        self.stderr = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stderr(self):
        for line in self.proc.stderr:
            self.stderr.append(line.decode(errors="replace"))

    def _read(self):
        for line in self.proc.stdout:
            line = line.strip()
            if line:
                self.events.put(json.loads(line))
        self.events.put({"event": "exit"})

    def next_event(self, timeout=20):
        try:
            ev = self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no WebSocket event within {timeout}s; so far {self.seen}; "
                                 f"stderr: {''.join(self.stderr)[-2000:]}")
        self.seen.append(ev)
        return ev

    def wait_for(self, kind, timeout=20):
        """The next event of that kind; fails on close/exit/refusal first."""
        deadline = time.time() + timeout
        while True:
            ev = self.next_event(max(0.01, deadline - time.time()))
            if ev["event"] == kind:
                return ev
            if ev["event"] in ("close", "exit", "unexpected-response") or \
                    (ev["event"] == "error" and kind != "error"):
                raise AssertionError(f"waiting for {kind}, got {ev}; so far {self.seen}")

    def no_message(self, within=1.0):
        """Asserts nothing arrives for `within` seconds."""
        try:
            ev = self.events.get(timeout=within)
        except queue.Empty:
            return
        self.seen.append(ev)
        raise AssertionError(f"unexpected WebSocket event {ev}")

    def send(self, text):
        self._command({"send": text})

    def close(self, code=1000):
        self._command({"close": code})

    def _command(self, cmd):
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def stop(self):
        with contextlib.suppress(BrokenPipeError, OSError):
            self.proc.stdin.close()
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode
