// Reference of the end-to-end scenario (bench/bench.py, group e2e): the seed
// system's design in one Node.js process. An HTTP server takes
// POST /v1/events/{topic}, adds an eventId and produces the event with kafkajs
// (202 once the broker acknowledged, acks=all); a kafkajs consumer (its own
// group) reads the topic and pushes each event to the WebSocket sockets it
// holds for the event's customer (`ws`, HS256 JWT in ?token=, sub = customer),
// as the same JSON message the engine's template renders, with a per-customer
// seq.
//
//   node bench/node-e2e-server.js BOOTSTRAP TOPIC GROUP SECRET
// Prints "LISTENING http=PORT ws=PORT" and then "READY" once the consumer
// joined its group and was assigned the topic's partitions. Stops on SIGTERM.
'use strict';
const path = require('path');
const http = require('http');
const crypto = require('crypto');
const mods = path.join(__dirname, '../.deps/node/node_modules');
const { Kafka, logLevel } = require(path.join(mods, 'kafkajs'));
const WebSocket = require(path.join(mods, 'ws'));

const [bootstrap, topic, group, secret] = process.argv.slice(2);
const kafka = new Kafka({ clientId: 'bench-node-e2e', brokers: [bootstrap], logLevel: logLevel.ERROR });
const producer = kafka.producer();
const consumer = kafka.consumer({ groupId: group });
const sockets = new Map(); // customerId -> Set of sockets
const seqs = new Map();    // customerId -> last seq

function verify(token) {
  const parts = (token || '').split('.');
  if (parts.length !== 3) return null;
  const want = crypto.createHmac('sha256', secret).update(`${parts[0]}.${parts[1]}`).digest();
  const got = Buffer.from(parts[2], 'base64url');
  if (got.length !== want.length || !crypto.timingSafeEqual(got, want)) return null;
  let head, claims;
  try {
    head = JSON.parse(Buffer.from(parts[0], 'base64url'));
    claims = JSON.parse(Buffer.from(parts[1], 'base64url'));
  } catch (e) {
    return null;
  }
  if (head.alg !== 'HS256' || typeof claims.sub !== 'string' || !claims.sub) return null;
  if (typeof claims.exp !== 'number' || claims.exp * 1000 < Date.now()) return null;
  return claims.sub;
}

const api = http.createServer((req, res) => {
  const m = /^\/v1\/events\/([^/?]+)$/.exec(req.url);
  if (req.method !== 'POST' || !m) {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let ev;
    try {
      ev = JSON.parse(Buffer.concat(chunks));
    } catch (e) {
      res.writeHead(400, { 'Content-Type': 'application/json' }).end('{"error":"not JSON"}');
      return;
    }
    if (typeof ev.customerId !== 'string') {
      res.writeHead(400, { 'Content-Type': 'application/json' }).end('{"error":"no customerId"}');
      return;
    }
    ev.eventId = ev.eventId || crypto.randomUUID();
    producer.send({ topic: m[1], acks: -1, messages: [{ key: ev.customerId, value: JSON.stringify(ev) }] })
      .then(() => res.writeHead(202, { 'Content-Type': 'application/json' })
        .end(JSON.stringify({ eventId: ev.eventId })))
      .catch((e) => res.writeHead(503, { 'Content-Type': 'application/json' })
        .end(JSON.stringify({ error: e.message })));
  });
});

const wsHttp = http.createServer((req, res) => res.writeHead(404).end());
const wss = new WebSocket.Server({ noServer: true, perMessageDeflate: false });
wsHttp.on('upgrade', (req, sock, head) => {
  const u = new URL(req.url, 'http://x');
  const sub = u.pathname === '/ws' ? verify(u.searchParams.get('token')) : null;
  if (!sub) {
    sock.end('HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  wss.handleUpgrade(req, sock, head, (ws) => {
    let set = sockets.get(sub);
    if (!set) sockets.set(sub, (set = new Set()));
    set.add(ws);
    ws.on('close', () => {
      set.delete(ws);
      if (!set.size) sockets.delete(sub);
    });
    ws.on('error', () => {});
    ws.send(JSON.stringify({ type: 'connectd.hello', customerId: sub, lastSeq: seqs.get(sub) || 0 }));
  });
});

function push(value) {
  let ev;
  try {
    ev = JSON.parse(value);
  } catch (e) {
    return;
  }
  const c = ev.customerId;
  const seq = (seqs.get(c) || 0) + 1;
  seqs.set(c, seq);
  const d = ev.data || {};
  const msg = JSON.stringify({ seq, type: 'E2E', eventId: ev.eventId, customerId: c, n: d.n, sentUs: d.sentUs });
  const set = sockets.get(c);
  if (set) for (const ws of set) ws.send(msg);
}

async function main() {
  await producer.connect();
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  let ready = false;
  consumer.on(consumer.events.GROUP_JOIN, (e) => {
    const parts = (e.payload.memberAssignment || {})[topic] || [];
    if (!ready && parts.length) {
      ready = true;
      process.stdout.write('READY\n');
    }
  });
  await consumer.run({ eachMessage: async ({ message }) => push(message.value) });
  await new Promise((r) => api.listen(0, '127.0.0.1', r));
  await new Promise((r) => wsHttp.listen(0, '127.0.0.1', r));
  process.stdout.write(`LISTENING http=${api.address().port} ws=${wsHttp.address().port}\n`);
}

let stopping = false;
process.on('SIGTERM', async () => {
  if (stopping) return;
  stopping = true;
  for (const set of sockets.values()) for (const ws of set) ws.close(1001, 'server shutting down');
  api.close();
  wsHttp.close();
  try {
    await consumer.disconnect();
    await producer.disconnect();
  } finally {
    process.exit(0);
  }
});

main().catch((e) => {
  process.stderr.write(`node-e2e-server: ${e.stack || e}\n`);
  process.exit(2);
});
