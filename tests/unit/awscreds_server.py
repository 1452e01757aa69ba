#!/usr/bin/env python3
"""A container-credentials endpoint for tests/unit/awscreds.c (stdlib only).

Plays the ECS agent behind AWS_CONTAINER_CREDENTIALS_FULL_URI.  Usage:
  awscreds_server.py TOKEN
Listens on 127.0.0.1, port 0; prints the port on stdout; exits when its
stdin closes (so a crashed test leaves no server behind) or on SIGTERM.

  /creds   the credentials, if the Authorization header is exactly TOKEN
           (else 401).  Query options:
             lifetime=S     Expiration S seconds from now (default 3600)
             fail_first=N   the first N fetches answer `status` instead
             fail_after=N   every fetch after the N-th answers `status`
             status=C       the failure status (default 500)
           The n-th successful answer carries AccessKeyId "AKID-n",
           SecretAccessKey "secret-n" and Token "token-n", so a test sees
           which fetch its keys came from.
  /stats   {"fetches": all /creds requests, "ok": successful ones,
            "auth_failures": requests with a wrong or missing token}
"""
import json
import os
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = sys.argv[1] if len(sys.argv) > 1 else ""
lock = threading.Lock()
stats = {"fetches": 0, "ok": 0, "auth_failures": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/stats":
            with lock:
                self.reply(200, dict(stats))
            return
        if url.path != "/creds":
            self.reply(404, {"message": "no such endpoint"})
            return
        with lock:
            stats["fetches"] += 1
            n = stats["fetches"]
            if self.headers.get("Authorization") != TOKEN:
                stats["auth_failures"] += 1
                fail = 401
            else:
                fail = None
                status = int(q.get("status", 500))
                if n <= int(q.get("fail_first", 0)):
                    fail = status
                if "fail_after" in q and n > int(q["fail_after"]):
                    fail = status
                if fail is None:
                    stats["ok"] += 1
                    ok = stats["ok"]
        if fail is not None:
            msg = "bad authorization token" if fail == 401 else "injected failure"
            self.reply(fail, {"code": "Test", "message": msg})
            return
        expires = time.gmtime(time.time() + float(q.get("lifetime", 3600)))
        self.reply(
            200,
            {
                "RoleArn": "arn:aws:iam::123456789012:role/connectd-test",
                "AccessKeyId": f"AKID-{ok}",
                "SecretAccessKey": f"secret-{ok}",
                "Token": f"token-{ok}",
                "Expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ", expires),
            },
        )


class Server(ThreadingHTTPServer):
    daemon_threads = True


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
