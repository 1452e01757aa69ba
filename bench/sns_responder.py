#!/usr/bin/env python3
"""A fast loopback stand-in for SNS's Publish and PublishBatch, for bench.py's
`sns` scenario (consume → sink-sns, PublishBatch against single Publish).

  sns_responder.py PORTFILE

Listens on 127.0.0.1:<free port> (written to PORTFILE) and answers every POST
with 200 and a valid XML answer, HTTP/1.1 keep-alive, without checking
signatures: a PublishResponse with a MessageId for Action=Publish, a
PublishBatchResponse listing every entry's Id under Successful for
Action=PublishBatch (the query protocol's form body, as SNS gets it). It
counts what it was sent: every message's "eventId" (the message is the
record's JSON value, form-encoded), so bench.py can check that every record
arrived and how many times. GET /_count answers {"requests", "publish",
"publish_batch", "messages", "distinct", "last_item_wall"}; GET /_ids the
distinct eventIds, one a line. Single-threaded asyncio; its CPU is reported
beside the engine's, not counted in it.
"""
import asyncio
import json
import os
import re
import signal
import sys
import time
import uuid

# "eventId":"<id>" inside a form-encoded JSON message.
EVENT_ID = re.compile(rb"%22eventId%22%3A%22([A-Za-z0-9._~-]+)%22")
BATCH_ID = re.compile(rb"PublishBatchRequestEntries\.member\.\d+\.Id=([A-Za-z0-9_-]+)")
NS = b'xmlns="http://sns.amazonaws.com/doc/2010-03-31/"'
MSG_ID = str(uuid.uuid4()).encode()

state = {"requests": 0, "publish": 0, "publish_batch": 0, "messages": 0, "last_item_wall": None}
ids = set()


def answer(status, ctype, body):
    return (b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype + b"\r\nx-amzn-RequestId: b"
            b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def handle_post(body):
    state["requests"] += 1
    found = EVENT_ID.findall(body)
    state["messages"] += len(found)
    before = len(ids)
    ids.update(found)
    if len(ids) != before:
        state["last_item_wall"] = time.time()
    if body.startswith(b"Action=PublishBatch&"):
        state["publish_batch"] += 1
        members = b"".join(b"<member><Id>" + i + b"</Id><MessageId>" + MSG_ID
                           + b"</MessageId></member>" for i in BATCH_ID.findall(body))
        xml = (b"<PublishBatchResponse " + NS + b"><PublishBatchResult><Successful>" + members
               + b"</Successful><Failed/></PublishBatchResult><ResponseMetadata><RequestId>b"
               b"</RequestId></ResponseMetadata></PublishBatchResponse>")
    else:
        state["publish"] += 1
        xml = (b"<PublishResponse " + NS + b"><PublishResult><MessageId>" + MSG_ID
               + b"</MessageId></PublishResult><ResponseMetadata><RequestId>b</RequestId>"
               b"</ResponseMetadata></PublishResponse>")
    return answer(b"200 OK", b"text/xml", xml)


class Proto(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        out = []
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                break
            lines = self.buf[:end].decode("latin-1").split("\r\n")
            clen = 0
            for line in lines[1:]:
                k, _, v = line.partition(":")
                if k.strip().lower() == "content-length":
                    clen = int(v.strip())
            if len(self.buf) < end + 4 + clen:
                break
            body = self.buf[end + 4:end + 4 + clen]
            self.buf = self.buf[end + 4 + clen:]
            method, path = lines[0].split(" ")[:2]
            if method == "GET":
                if path == "/_ids":
                    b = b"\n".join(sorted(ids)) + b"\n"
                else:
                    b = json.dumps({**state, "distinct": len(ids)}).encode()
                out.append(answer(b"200 OK", b"application/json", b))
            else:
                out.append(handle_post(body))
        if out:
            self.t.write(b"".join(out))


async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Proto, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    tmp = sys.argv[1] + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.replace(tmp, sys.argv[1])
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
