// Load tool of the end-to-end scenario (bench/bench.py, group e2e): holds one
// WebSocket client per customer and POSTs events that must come back to exactly
// their customer's client, timing each from the POST's send time to the
// client's receipt on one clock (process.hrtime of this process: the send time
// travels in the event's data.sentUs and comes back in the pushed message).
//
//   node bench/e2e-load.js '<config JSON>'
//     {"ws": "ws://127.0.0.1:P/ws", "post": "http://127.0.0.1:Q/v1/events/T",
//      "secret": "...", "customers": 1000, "mode": "rate" | "burst",
//      "rate": 1000, "duration_s": 20, "events": 10000 (burst),
//      "post_sockets": 64, "connect_concurrency": 200, "drain_s": 15,
//      "dump": "FILE" (optional: "n sendUs latencyUs" of every delivered event,
//      send time from the first send, for looking at when the slow ones were)}
//
// Protocol on stdout, one line each: "CONNECTED {json}" once every client got
// its hello; then it waits for a line on stdin (the driver measures the
// server meanwhile) and sends; "RESULT {json}" at the end. Exit status 0 when
// it could run to the end; the driver checks the counts in RESULT.
'use strict';
const path = require('path');
const http = require('http');
const crypto = require('crypto');
const readline = require('readline');
const { monitorEventLoopDelay } = require('perf_hooks');
const WebSocket = require(path.join(__dirname, '../.deps/node/node_modules/ws'));

const cfg = JSON.parse(process.argv[2]);
const C = cfg.customers;
const nowUs = () => Number(process.hrtime.bigint() / 1000n);
const b64url = (b) => Buffer.from(b).toString('base64url');

function jwt(sub) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify({ sub, iat: now, exp: now + 7200 }));
  const sig = crypto.createHmac('sha256', cfg.secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

const custName = (i) => `cust-${String(i).padStart(5, '0')}`;
const stats = {
  sent: 0, answered: 0, status: {}, post_errors: 0, post_error_examples: [],
  received: 0, duplicates: 0, wrong_customer: 0, unknown: 0, bad_messages: 0,
  bad_examples: [], sent_mismatch: 0, late_sends: 0, closed_early: 0, close_codes: {},
};
let total = 0;          // events this run sends
let sentUs = null;      // Float64Array: send time of event n
let got = null;         // Uint8Array: times event n was received
let lat = null;         // Float64Array of latencies (µs), in receipt order
let latByN = null;      // the same by event (cfg.dump only)
let firstSend = 0, lastRecv = 0, lastSend = 0, lastProgress = 0, allSent = false;
const clients = [];

function bad(why) {
  stats.bad_messages++;
  if (stats.bad_examples.length < 5) stats.bad_examples.push(why);
}

function onMessage(ci, data) {
  const t = nowUs();
  let m;
  try { m = JSON.parse(data); } catch (e) { bad(`not JSON: ${String(data).slice(0, 200)}`); return; }
  if (m.type === 'connectd.hello') {
    const c = clients[ci];
    if (!c.hello) { c.hello = true; c.onHello(); }
    return;
  }
  const n = Number(m.n);
  if (!Number.isInteger(n) || n < 0 || got === null || n >= total) {
    stats.unknown++;
    if (stats.bad_examples.length < 5) stats.bad_examples.push(`unknown: ${String(data).slice(0, 200)}`);
    return;
  }
  if (m.customerId !== custName(ci) || n % C !== ci) { stats.wrong_customer++; return; }
  if (got[n]++) { stats.duplicates++; return; }
  const s = Number(m.sentUs);
  if (s !== sentUs[n]) stats.sent_mismatch++;
  lat[stats.received++] = t - s;
  if (latByN) latByN[n] = t - s;
  lastRecv = t;
  lastProgress = t;
}

function connect(ci) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${cfg.ws}?token=${jwt(custName(ci))}`, { perMessageDeflate: false });
    const c = { ws, hello: false, onHello: resolve, open: false };
    clients[ci] = c;
    ws.on('message', (d) => onMessage(ci, d));
    ws.on('open', () => { c.open = true; });
    ws.on('error', (e) => { if (!c.hello) reject(new Error(`client ${ci}: ${e.message}`)); });
    ws.on('close', (code) => {
      if (!c.hello) reject(new Error(`client ${ci} closed before its hello (${code})`));
      else if (!c.closing) {
        stats.closed_early++;
        stats.close_codes[code] = (stats.close_codes[code] || 0) + 1;
      }
    });
  });
}

async function connectAll() {
  let next = 0;
  const worker = async () => {
    while (next < C) await connect(next++);
  };
  await Promise.all(Array.from({ length: Math.min(cfg.connect_concurrency || 200, C) }, worker));
}

const agent = new http.Agent({ keepAlive: true, maxSockets: cfg.post_sockets || 64 });
const url = new URL(cfg.post);
let inflight = 0;

function post(n) {
  const ci = n % C;
  const ts = new Date().toISOString();
  const t = nowUs();
  sentUs[n] = t;
  const body = JSON.stringify({
    eventType: 'kyc-verified', customerId: custName(ci), applicationId: `app-${n}`, timestamp: ts,
    data: { status: 'VERIFIED', riskLevel: 'LOW', n, sentUs: t },
  });
  inflight++;
  stats.sent++;
  lastSend = t;
  const req = http.request({
    host: url.hostname, port: url.port, path: url.pathname, method: 'POST', agent,
    headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
  }, (res) => {
    stats.status[res.statusCode] = (stats.status[res.statusCode] || 0) + 1;
    res.resume();
    res.on('end', () => { inflight--; stats.answered++; });
  });
  req.on('error', (e) => {
    inflight--;
    stats.post_errors++;
    if (stats.post_error_examples.length < 5) stats.post_error_examples.push(e.message);
  });
  req.end(body);
}

function sendRate() {
  return new Promise((resolve) => {
    const start = nowUs();
    firstSend = start;
    let n = 0;
    const tick = () => {
      const now = nowUs();
      while (n < total && start + (n * 1e6) / cfg.rate <= now) {
        if (now - (start + (n * 1e6) / cfg.rate) > 1000) stats.late_sends++;
        post(n++);
      }
      if (n < total) setTimeout(tick, 1); else resolve();
    };
    tick();
  });
}

function sendBurst() {
  // As fast as the keep-alive sockets take them: at most post_sockets * 4
  // requests queued in the agent at once.
  return new Promise((resolve) => {
    firstSend = nowUs();
    let n = 0;
    const cap = (cfg.post_sockets || 64) * 4;
    const pump = () => {
      while (n < total && inflight < cap) post(n++);
      if (n < total) setImmediate(pump); else resolve();
    };
    pump();
  });
}

function pct(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] / 1000;
}

async function main() {
  const t0 = nowUs();
  await connectAll();
  const connectS = (nowUs() - t0) / 1e6;
  process.stdout.write(`CONNECTED ${JSON.stringify({ clients: C, connect_s: connectS })}\n`);
  const rl = readline.createInterface({ input: process.stdin });
  await new Promise((resolve) => rl.once('line', resolve));
  rl.close();

  total = cfg.mode === 'burst' ? cfg.events : Math.round(cfg.rate * cfg.duration_s);
  sentUs = new Float64Array(total);
  got = new Uint8Array(total);
  lat = new Float64Array(total);
  if (cfg.dump) latByN = new Float64Array(total);
  lastProgress = nowUs();
  // This process's own stalls (GC, a busy loop) delay receipts and count as
  // latency: its event-loop delay is reported beside the latencies.
  const loopDelay = monitorEventLoopDelay({ resolution: 1 });
  loopDelay.enable();
  await (cfg.mode === 'burst' ? sendBurst() : sendRate());
  allSent = true;
  const sendEnd = nowUs();
  const drainUs = (cfg.drain_s || 15) * 1e6;
  await new Promise((resolve) => {
    const check = () => {
      const done = inflight === 0 && stats.received >= total;
      if (done || nowUs() - Math.max(lastProgress, sendEnd) > drainUs) resolve();
      else setTimeout(check, 5);
    };
    check();
  });
  if (cfg.dump) {
    // n, send time and latency (µs) of every delivered event, for a closer look
    const lines = [];
    for (let n = 0; n < total; n++) {
      if (got[n]) lines.push(`${n} ${sentUs[n] - firstSend} ${latByN[n]}`);
    }
    require('fs').writeFileSync(cfg.dump, lines.join('\n') + '\n');
  }
  loopDelay.disable();
  const sorted = Float64Array.from(lat.subarray(0, stats.received)).sort();
  let missing = 0;
  const missingExamples = [];
  for (let n = 0; n < total; n++) {
    if (!got[n]) {
      missing++;
      if (missingExamples.length < 5) missingExamples.push(n);
    }
  }
  const out = {
    ...stats, events: total, customers: C, missing, missing_examples: missingExamples,
    send_s: (sendEnd - firstSend) / 1e6,
    deliver_s: stats.received ? (lastRecv - firstSend) / 1e6 : null,
    p50_ms: pct(sorted, 50), p90_ms: pct(sorted, 90), p99_ms: pct(sorted, 99),
    p999_ms: pct(sorted, 99.9), max_ms: sorted.length ? sorted[sorted.length - 1] / 1000 : null,
    min_ms: sorted.length ? sorted[0] / 1000 : null,
    // event-loop delay beyond the 1 ms sampling interval, in ms
    tool_loop_delay_p99_ms: Math.max(0, loopDelay.percentile(99) / 1e6 - 1),
    tool_loop_delay_max_ms: Math.max(0, loopDelay.max / 1e6 - 1),
    still_open: clients.filter((c) => c.ws.readyState === WebSocket.OPEN).length,
  };
  process.stdout.write(`RESULT ${JSON.stringify(out)}\n`);
  // Close politely and wait for the server's close frames: a server that
  // writes to a socket its peer reset may die of SIGPIPE (see bench/README.md).
  agent.destroy();
  let open = 0;
  await new Promise((resolve) => {
    for (const c of clients) {
      c.closing = true;
      if (c.ws.readyState === WebSocket.CLOSED) continue;
      open++;
      c.ws.once('close', () => { if (--open === 0) resolve(); });
      c.ws.close(1000, 'bench done');
    }
    if (open === 0) resolve();
    setTimeout(resolve, 10000);
  });
  process.exit(0);
}

main().catch((e) => {
  process.stderr.write(`e2e-load: ${e.stack || e}\n`);
  process.exit(2);
});
