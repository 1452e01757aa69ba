"""The API Gateway WebSocket harness end to end: a browser-like client
connects to serverless-offline with a customer's JWT, the $connect route
lands in source-http's Redis registry, a POST to the management endpoint
@connections/{id} (what sink-websocket sends) reaches the client, and a
disconnect removes the registry entry, after which a POST answers 410."""
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
import uuid

import pytest

from apigw import WsClient, hs256_jwt, serverless_offline
from browser import run_page, serve_pages
from conftest import unique
from test_source_http import source_addr, source_engine

REDIS_URL = os.environ.get("REDIS_URL")
pytestmark = pytest.mark.skipif(not REDIS_URL, reason="REDIS_URL not set (scripts/redis-start)")
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def redis(*args):
    return subprocess.run([REDIS_CLI, "-u", REDIS_URL, "--raw", *args], check=True,
                          capture_output=True, text=True, timeout=30).stdout.strip()


def members(key):
    out = redis("SMEMBERS", key)
    return set(out.split("\n")) if out else set()


def wait_until(check, what, timeout=20):
    deadline = time.time() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"{what} within {timeout}s")
        time.sleep(0.05)


def ws_source(engines, kafka, tmp_path):
    """An engine whose source-http serves the WebSocket routes behind an API
    key, with its own registry prefix: (engine, base URL, key, prefix)."""
    api_key = "k-" + uuid.uuid4().hex
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    eng = source_engine(engines, kafka, tmp_path, {unique("apigw"): "kyc-verified"},
                        engine_extra={"redis_url": REDIS_URL}, ws_routes=True,
                        ws_key_prefix=prefix,
                        api_keys=["sha256:" + hashlib.sha256(api_key.encode()).hexdigest()])
    eng.start()
    host, port = source_addr(eng)
    return eng, f"http://{host}:{port}", api_key, prefix


def test_connect_push_disconnect_through_serverless_offline(kafka, engines, tmp_path):
    eng, url, api_key, prefix = ws_source(engines, kafka, tmp_path)
    cust = unique("cust")
    clients = []

    with serverless_offline(tmp_path / "apigw", url, api_key=api_key,
                            jwt_secret="s-" + uuid.uuid4().hex) as api:
        print(f"serverless-offline ready in {api.startup_seconds:.1f}s")
        try:
            # No token, or one signed with another secret: the authorizer says 401
            # and the handshake is refused; nothing reaches the registry.
            for url in (api.ws_url(), api.ws_url(hs256_jwt({"sub": cust}, "wrong"))):
                c = WsClient(url)
                clients.append(c)
                ev = c.wait_for("unexpected-response")
                assert ev["status"] == 401, ev
            assert redis("KEYS", f"{prefix}*") == ""

            # The customer's token: $connect -> POST /v1/ws/connect -> Redis.
            client = WsClient(api.ws_url(api.token(cust)))
            clients.append(client)
            client.wait_for("open")
            (conn_id,) = wait_until(lambda: members(f"{prefix}customer:{cust}"),
                                    "the connection in the registry")
            assert redis("GET", f"{prefix}connection:{conn_id}") == cust
            assert 86300 <= int(redis("TTL", f"{prefix}connection:{conn_id}")) <= 86400
            api.wait_log(f"ws connect {conn_id} {cust}: 200")

            # $default tells the client its own connection id: the registry's.
            client.send("hello")
            assert json.loads(client.wait_for("message")["data"]) == \
                {"connectionId": conn_id, "customerId": cust}

            # A second tab of the same customer gets its own connection.
            second = WsClient(api.ws_url(api.token(cust)))
            clients.append(second)
            second.wait_for("open")
            both = wait_until(lambda: (lambda m: m if len(m) == 2 else None)(
                members(f"{prefix}customer:{cust}")), "two connections in the registry")
            (other_id,) = both - {conn_id}

            # What sink-websocket does: POST @connections/{id} per registry member.
            # AWS answers 200, serverless-offline 204: a sink must take any 2xx.
            push = json.dumps({"type": "kyc-verified", "customerId": cust}).encode()
            status, _ = api.post_to_connection(conn_id, push)
            assert status in (200, 204)
            assert client.wait_for("message")["data"] == push.decode()
            second.no_message(0.5)  # the push went to that connection alone
            status, _ = api.post_to_connection(other_id, b"to the second tab")
            assert status in (200, 204)
            assert second.wait_for("message")["data"] == "to the second tab"

            # The client leaves: $disconnect -> POST /v1/ws/disconnect -> Redis.
            client.close()
            assert client.wait_for("close")["code"] == 1000
            wait_until(lambda: members(f"{prefix}customer:{cust}") == {other_id},
                       "the connection gone from the customer's set")
            assert redis("EXISTS", f"{prefix}connection:{conn_id}") == "0"
            api.wait_log(f"ws disconnect {conn_id} {cust}: 200")

            # A push to the gone connection: 410 Gone (the sink then prunes it).
            status, _ = api.post_to_connection(conn_id, push)
            assert status == 410

            # The management API can also close a connection (DELETE): the
            # client sees the close and $disconnect empties the registry.
            status, _ = api.delete_connection(other_id)
            assert status == 204
            second.wait_for("close")
            wait_until(lambda: redis("EXISTS", f"{prefix}customer:{cust}") == "0",
                       "the customer's set gone with its last member")
            assert redis("EXISTS", f"{prefix}connection:{other_id}") == "0"
            assert api.post_to_connection(other_id, push)[0] == 410

            # source-http gone: $connect cannot record the connection, so the
            # handshake is refused rather than left open unregistered.
            assert eng.stop() == 0
            late = WsClient(api.ws_url(api.token(cust)))
            clients.append(late)
            assert late.wait_for("unexpected-response")["status"] == 502
            assert redis("KEYS", f"{prefix}*") == ""
        finally:
            for c in clients:
                c.stop()


PAGE = """<!DOCTYPE html><title>push</title><ul id="log"></ul><script>
const ws = new WebSocket(%s);
ws.onopen = () => { document.title = "open"; };
ws.onmessage = (e) => {
  const li = document.createElement("li"); li.textContent = e.data;
  document.getElementById("log").append(li);
};
</script>"""


def test_a_browser_connects_with_a_token_and_receives_a_push(kafka, engines, tmp_path):
    eng, url, api_key, prefix = ws_source(engines, kafka, tmp_path)
    cust = unique("cust")
    with serverless_offline(tmp_path / "apigw", url, api_key=api_key) as api:
        page = PAGE % json.dumps(api.ws_url(api.token(cust)))
        pushed = {}

        def push_when_registered():
            # What sink-websocket will do once the registry names the browser.
            # $connect writes the registry before the handshake completes, and
            # until it has, a POST to the connection is 410 (AWS behaves alike):
            # a connection registered a moment ago may not take pushes yet.
            deadline = time.time() + 30
            while time.time() < deadline and not pushed:
                for conn in members(f"{prefix}customer:{cust}"):
                    status = api.post_to_connection(conn, b'{"step":"kyc-verified"}')[0]
                    if status != 410:
                        pushed[conn] = status
                time.sleep(0.05)

        t = threading.Thread(target=push_when_registered, daemon=True)
        t.start()
        with serve_pages({"/push.html": page}) as site:
            result = run_page(site + "/push.html", [
                {"wait_for_function": "() => document.title === 'open'"},
                {"wait_for_ws_message": "kyc-verified"},
                {"wait_for": "#log li"},
                {"text": "#log li", "as": "shown"},
            ])
        t.join(timeout=30)
        assert list(pushed.values()) in ([200], [204]), pushed
        assert result["results"]["shown"] == '{"step":"kyc-verified"}'
        (sock,) = result["websockets"]
        assert sock["url"].startswith(api.ws_url() + "?token=")
        assert sock["received"] == ['{"step":"kyc-verified"}']
        # The browser went away with the page: $disconnect emptied the registry.
        wait_until(lambda: redis("EXISTS", f"{prefix}customer:{cust}") == "0",
                   "the registry emptied after the browser closed")
        (conn,) = pushed
        assert api.post_to_connection(conn, b"late")[0] == 410
    assert eng.stop() == 0
