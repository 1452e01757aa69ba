"""Headless Chromium for integration tests: runs tests/browser/run-page.js
(playwright-core driving Debian's /usr/bin/chromium) on one page with a list
of steps, and returns the JSON it printed.  Screenshots land in
$CONNECTD_BUILD_DIR/test-artifacts/ and are kept after the run."""
import contextlib
import http.server
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "tests" / "browser" / "run-page.js"
BUILD = Path(os.environ.get("CONNECTD_BUILD_DIR", ROOT / "build"))
ARTIFACTS = BUILD / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def missing():
    """Why the browser cannot run here (None when it can): the tools come
    from scripts/install-deps (Debian's chromium, npm's playwright-core)."""
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"{CHROMIUM} not found (scripts/install-deps installs Debian's chromium)"
    if not (ROOT / ".deps" / "node" / "node_modules" / "playwright-core").is_dir():
        return "playwright-core not installed under .deps/node (scripts/install-deps)"
    if not shutil.which("node"):
        return "node not on PATH"
    return None


class PageRunFailed(AssertionError):
    pass


def run_page(url, steps, timeout_ms=15000, viewport=None, overall_timeout=180):
    """Opens url, runs the steps (see run-page.js) and returns the result
    dict; raises PageRunFailed with the runner's error, the step it failed
    at, the page's console and errors, and the failure screenshot's path."""
    reason = missing()
    if reason:
        raise PageRunFailed(reason)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    spec = {"url": url, "steps": steps, "timeout_ms": timeout_ms,
            "artifacts_dir": str(ARTIFACTS)}
    if viewport:
        spec["viewport"] = viewport
    env = dict(os.environ, CONNECTD_BUILD_DIR=str(BUILD), CHROMIUM=CHROMIUM)
    p = subprocess.run(["node", str(RUNNER), "-"], input=json.dumps(spec).encode(),
                       capture_output=True, timeout=overall_timeout, env=env)
    lines = p.stdout.decode(errors="replace").strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise PageRunFailed(f"run-page.js exited {p.returncode} without a result:\n"
                            f"{p.stdout.decode(errors='replace')[-2000:]}\n"
                            f"{p.stderr.decode(errors='replace')[-4000:]}")
    if p.returncode != 0 or not result.get("ok"):
        raise PageRunFailed(
            f"page run failed at step {result.get('step')} "
            f"({steps[result['step']] if isinstance(result.get('step'), int) else '-'}): "
            f"{result.get('error')}\nconsole: {result.get('console')}\n"
            f"page errors: {result.get('page_errors')}\n"
            f"failed requests: {result.get('failed_requests')}\n"
            f"screenshots: {result.get('screenshots')}\n"
            f"stderr: {p.stderr.decode(errors='replace')[-2000:]}")
    return result


@contextlib.contextmanager
def serve_pages(pages):
    """Serves {path: html} from 127.0.0.1 on a free port while the block
    runs; yields the base URL.  Chromium lets only a loopback page reach
    loopback servers (Local Network Access), so a test page that opens a
    WebSocket to one is served from here rather than from a data: URL."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = pages.get(self.path.split("?", 1)[0])
            if body is None:
                self.send_error(404)
                return
            data = body.encode() if isinstance(body, str) else body
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
