"""A stand-in SNS endpoint on 127.0.0.1 for test_sink_sns.py: it answers the
first `throttle` requests with SNS's real Throttling error (HTTP 400, the
query protocol's ErrorResponse XML, a Retry-After header), then valid
Publish / PublishBatch answers.  Every request's Authorization header must
have SigV4's shape (AWS4-HMAC-SHA256, a credential scoped to
<date>/<region>/sns/aws4_request, signed host and x-amz-date, a 64-hex
signature); the body must be form-encoded.  What it accepted is kept in
`published` (form fields of each message) for the test to check."""
import http.server
import re
import threading
import uuid
from urllib.parse import parse_qs

SIGV4 = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[A-Za-z0-9]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)"
    r"/sns/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;-]+), ?Signature=[0-9a-f]{64}$")

THROTTLING = (
    '<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">\n'
    '  <Error>\n    <Type>Sender</Type>\n    <Code>Throttling</Code>\n'
    '    <Message>Rate exceeded</Message>\n  </Error>\n'
    '  <RequestId>{rid}</RequestId>\n</ErrorResponse>\n')


class SnsThrottleResponder:
    def __init__(self, throttle, region="eu-west-1", key="testing"):
        self.throttle = throttle
        self.region = region
        self.key = key
        self.lock = threading.Lock()
        self.requests = 0
        self.throttled = 0
        self.actions = []
        self.bad = []        # reasons a request was refused (auth shape, body)
        self.published = []  # dicts of each accepted message's fields
        me = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, xml, extra = me.handle(self.headers, body)
                data = xml.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(data)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def check_auth(self, headers):
        auth = headers.get("Authorization", "")
        m = SIGV4.match(auth)
        if not m:
            return f"Authorization is not SigV4: {auth!r}"
        if m["key"] != self.key or m["region"] != self.region:
            return f"credential scope {m['key']}/{m['region']} is not {self.key}/{self.region}"
        signed = m["signed"].split(";")
        if "host" not in signed or "x-amz-date" not in signed:
            return f"host and x-amz-date are not signed: {signed}"
        if not re.match(r"^\d{8}T\d{6}Z$", headers.get("X-Amz-Date", "")):
            return f"bad X-Amz-Date {headers.get('X-Amz-Date')!r}"
        if not headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            return f"Content-Type {headers.get('Content-Type')!r}"
        return None

    def handle(self, headers, body):
        with self.lock:
            self.requests += 1
            why = self.check_auth(headers)
            if why:
                self.bad.append(why)
                return 403, ('<ErrorResponse><Error><Type>Sender</Type><Code>'
                             'IncompleteSignature</Code><Message>' + why.replace("<", "")
                             + '</Message></Error></ErrorResponse>'), {}
            form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True,
                                                 strict_parsing=True).items()}
            action = form.get("Action")
            self.actions.append(action)
            if form.get("Version") != "2010-03-31" or "TopicArn" not in form:
                self.bad.append(f"bad form: {sorted(form)}")
                return 400, "<ErrorResponse><Error><Code>InvalidParameter</Code>" \
                            "<Message>form</Message></Error></ErrorResponse>", {}
            if self.throttled < self.throttle:
                self.throttled += 1
                return 400, THROTTLING.format(rid=uuid.uuid4()), {"Retry-After": "1"}
            if action == "Publish":
                self.published.append({k: v for k, v in form.items()
                                       if k not in ("Action", "Version", "TopicArn")})
                return 200, ('<PublishResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">'
                             f'<PublishResult><MessageId>{uuid.uuid4()}</MessageId>'
                             '</PublishResult></PublishResponse>'), {}
            entries = {}
            for k, v in form.items():
                m = re.match(r"^PublishBatchRequestEntries\.member\.(\d+)\.(.+)$", k)
                if m:
                    entries.setdefault(int(m[1]), {})[m[2]] = v
            members = []
            for n in sorted(entries):
                e = entries[n]
                self.published.append({k: v for k, v in e.items() if k != "Id"})
                members.append(f"<member><Id>{e['Id']}</Id><MessageId>{uuid.uuid4()}"
                               "</MessageId></member>")
            return 200, ('<PublishBatchResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">'
                         '<PublishBatchResult><Successful>' + "".join(members)
                         + '</Successful><Failed/></PublishBatchResult></PublishBatchResponse>'), {}

    def close(self):
        self.server.shutdown()
        self.server.server_close()
