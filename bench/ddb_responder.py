#!/usr/bin/env python3
"""A fast loopback stand-in for DynamoDB's BatchWriteItem, for bench.py's
consume → sink-dynamodb scenario and its Node.js reference.

  ddb_responder.py PORTFILE

Listens on 127.0.0.1:<free port> (written to PORTFILE), answers every POST
with 200 and a valid empty BatchWriteItem response ({"UnprocessedItems":{}}),
HTTP/1.1 keep-alive, without checking signatures. It counts what it was sent:
every PutRequest's "eventId" (an S attribute), so bench.py can check that
every record arrived, and how many times. GET /_count answers
{"requests", "items", "distinct", "last_item_wall"} (last_item_wall: time.time()
of the request that brought the last new eventId); GET /_ids answers the
distinct eventIds, one a line. Single-threaded asyncio: a request costs it far
less than either client under test, but it shares the machine's cores (its
CPU is reported too).
"""
import asyncio
import json
import os
import re
import sys
import time

EVENT_ID = re.compile(rb'"eventId"\s*:\s*\{\s*"S"\s*:\s*"((?:[^"\\]|\\.)*)"')
BODY = b'{"UnprocessedItems":{}}'
ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\n"
          b"x-amzn-RequestId: bench\r\nContent-Length: " + str(len(BODY)).encode()
          + b"\r\n\r\n" + BODY)

state = {"requests": 0, "items": 0, "last_item_wall": None}
ids = set()


def handle_body(body):
    found = EVENT_ID.findall(body)
    state["requests"] += 1
    state["items"] += len(found)
    before = len(ids)
    ids.update(found)
    if len(ids) != before:
        state["last_item_wall"] = time.time()


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
            head = self.buf[:end].decode("latin-1")
            lines = head.split("\r\n")
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
                out.append(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                           b"Content-Length: " + str(len(b)).encode() + b"\r\n\r\n" + b)
            else:
                handle_body(body)
                out.append(ANSWER)
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
    import signal
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
