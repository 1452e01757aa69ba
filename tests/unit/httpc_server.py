#!/usr/bin/env python3
"""A real HTTP/1.1 peer for tests/unit/httpc.c (python3 stdlib only).

Listens on 127.0.0.1, port 0; prints the port on stdout; exits when its
stdin closes (so a crashed test leaves no server behind) or on SIGTERM.

  /echo            method, path, query, headers, body and connection id as JSON
  /status/N        status N (?retry_after=S adds Retry-After: S)
  /slow?ms=N       answers after N ms
  /big?n=N         N bytes of 'x'
  /close           200 with Connection: close (curl must open a new socket)
  /drop            closes the connection without answering
  /stats           connections accepted, most requests in flight at once
  /sigv4           verifies an AWS SigV4 Authorization header for real: the
                   canonical request rebuilt from what arrived, signed with the
                   secret this server knows for the access key (?region= and
                   ?service= say what the scope must name); 200 or 403 + reason

Every response but /drop has Content-Length, so connections stay alive.
"""
import calendar
import hashlib
import hmac
import json
import os
import re
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The access keys this server knows, as AWS's documentation examples.
SECRETS = {"AKIDEXAMPLE": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}

lock = threading.Lock()
stats = {"connections": 0, "in_flight": 0, "max_in_flight": 0, "requests": 0}

AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([^/,\s]+)/(\d{8})/([^/,\s]+)/([^/,\s]+)/aws4_request, "
    r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})"
)


def uri_encode(s, safe):
    return urllib.parse.quote(s, safe=safe)


def canonical_query(query):
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    enc = sorted((uri_encode(k, "-_.~"), uri_encode(v, "-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in enc)


def verify_sigv4(h, body):
    """Returns (ok, reason, details) for the request in handler h."""
    auth = h.headers.get("Authorization")
    if not auth:
        return False, "no Authorization header", {}
    m = AUTH_RE.fullmatch(auth)
    if not m:
        return False, f"Authorization header malformed: {auth}", {}
    akid, date, region, service, signed, signature = m.groups()
    details = {"access_key": akid, "region": region, "service": service,
               "signed_headers": signed.split(";")}
    if akid not in SECRETS:
        return False, f"unknown access key {akid}", details
    url = urllib.parse.urlsplit(h.path)
    want = dict(urllib.parse.parse_qsl(url.query))
    if "region" in want and want["region"] != region:
        return False, f"scope names region {region}, expected {want['region']}", details
    if "service" in want and want["service"] != service:
        return False, f"scope names service {service}, expected {want['service']}", details
    amz_date = h.headers.get("x-amz-date")
    if not amz_date or not re.fullmatch(r"\d{8}T\d{6}Z", amz_date):
        return False, "x-amz-date missing or malformed", details
    if not amz_date.startswith(date):
        return False, "credential date is not x-amz-date's day", details
    skew = abs(time.time() - calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ")))
    if skew > 15 * 60:
        return False, f"x-amz-date is {skew:.0f} s off", details
    names = signed.split(";")
    if names != sorted(names):
        return False, "SignedHeaders not sorted", details
    for must in ("host", "x-amz-date"):
        if must not in names:
            return False, f"{must} not signed", details
    if "x-amz-security-token" in h.headers and "x-amz-security-token" not in names:
        return False, "x-amz-security-token sent but not signed", details
    canon_headers = ""
    for n in names:
        values = h.headers.get_all(n)
        if values is None:
            return False, f"signed header {n} was not sent", details
        canon_headers += n + ":" + ",".join(" ".join(v.split()) for v in values) + "\n"
    payload_hash = h.headers.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    # Every service but S3 encodes the (already encoded) path once more.
    canon_uri = url.path if service == "s3" else uri_encode(url.path, "/~")
    creq = "\n".join([h.command, canon_uri, canonical_query(url.query), canon_headers, signed,
                      payload_hash])
    scope = f"{date}/{region}/{service}/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                     hashlib.sha256(creq.encode()).hexdigest()])
    k = ("AWS4" + SECRETS[akid]).encode()
    for part in (date, region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    details["canonical_request"] = creq
    details["security_token"] = h.headers.get("x-amz-security-token")
    if not hmac.compare_digest(expected, signature):
        return False, "signature does not match", details
    return True, "ok", details


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes; with Nagle the body would wait
    # for the client's delayed ACK (40 ms a request).
    disable_nagle_algorithm = True

    def setup(self):
        super().setup()
        with lock:
            stats["connections"] += 1
            self.conn_id = stats["connections"]

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body, ctype="application/json", extra=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Conn-Id", str(self.conn_id))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        counted = url.path != "/stats"
        if counted:
            with lock:
                stats["requests"] += 1
                stats["in_flight"] += 1
                stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
        try:
            self.route(url, q, body)
        finally:
            if counted:
                with lock:
                    stats["in_flight"] -= 1

    def route(self, url, q, body):
        path = url.path
        if path == "/echo":
            self.reply(200, {
                "method": self.command, "path": path, "query": url.query,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("utf-8", "replace"), "body_len": len(body),
                "conn": self.conn_id, "client_port": self.client_address[1],
            })
        elif path.startswith("/status/"):
            extra = [("Retry-After", q["retry_after"])] if "retry_after" in q else []
            code = int(path[len("/status/"):])
            self.reply(code, {"status": code}, extra=extra)
        elif path == "/slow":
            time.sleep(int(q.get("ms", "100")) / 1000.0)
            self.reply(200, b"slow", ctype="text/plain")
        elif path == "/big":
            self.reply(200, b"x" * int(q.get("n", "0")), ctype="application/octet-stream")
        elif path == "/close":
            self.close_connection = True
            self.reply(200, {"conn": self.conn_id}, extra=[("Connection", "close")])
        elif path == "/drop":
            self.close_connection = True
        elif path == "/stats":
            with lock:
                self.reply(200, dict(stats))
        elif path == "/sigv4" or path.startswith("/sigv4/"):
            ok, reason, details = verify_sigv4(self, body)
            details["reason"] = reason
            self.reply(200 if ok else 403, details)
        else:
            self.reply(404, {"error": "no such endpoint", "path": path})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 drops SYNs when a pool opens 8 connections at
    # once, and each dropped one costs a 1 s retransmit.
    request_queue_size = 128


def main():
    srv = Server(("127.0.0.1", 0), Handler)
    print(srv.server_address[1], flush=True)

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    srv.serve_forever()


if __name__ == "__main__":
    main()
