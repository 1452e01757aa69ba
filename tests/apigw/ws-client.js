#!/usr/bin/env node
/*
 * A WebSocket client for tests, driven over stdin/stdout (npm's `ws`, a
 * client we did not write). tests/integration/apigw.py wraps it.
 *
 *   node tests/apigw/ws-client.js URL [HEADER: VALUE ...]
 *
 * stdout, one JSON object a line:
 *   {"event": "open"}
 *   {"event": "message", "data": "...", "binary": false}
 *   {"event": "unexpected-response", "status": 401, "body": "..."}  handshake refused
 *   {"event": "error", "message": "..."}
 *   {"event": "close", "code": 1000, "reason": "..."}               then it exits 0
 * stdin, one JSON object a line:
 *   {"send": "text"}      sends a text frame
 *   {"close": 1000}       closes (code optional)
 * End of stdin closes the socket too.
 */
'use strict';

const path = require('path');
const readline = require('readline');

function load(name) {
  try {
    return require(path.join(__dirname, '..', '..', '.deps', 'node', 'node_modules', name));
  } catch (e) {
    return require(name);
  }
}

const WebSocket = load('ws');

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const url = process.argv[2];
if (!url) {
  emit({ event: 'error', message: 'usage: ws-client.js URL [HEADER: VALUE ...]' });
  process.exit(2);
}
const headers = {};
for (const h of process.argv.slice(3)) {
  const i = h.indexOf(':');
  if (i > 0) headers[h.slice(0, i).trim()] = h.slice(i + 1).trim();
}

let finished = false;
function finish(code) {
  if (finished) return;
  finished = true;
  // Let stdout drain before leaving.
  process.stdout.write('', () => process.exit(code));
}

const ws = new WebSocket(url, { headers, handshakeTimeout: 15000 });
ws.on('open', () => emit({ event: 'open' }));
ws.on('message', (data, isBinary) => emit({
  event: 'message', data: isBinary ? data.toString('base64') : data.toString('utf8'), binary: isBinary,
}));
ws.on('unexpected-response', (req, res) => {
  let body = '';
  res.setEncoding('utf8');
  res.on('data', (c) => { body += c; });
  res.on('end', () => {
    emit({ event: 'unexpected-response', status: res.statusCode, body });
    finish(0);
  });
});
ws.on('error', (e) => {
  emit({ event: 'error', message: String(e && e.message || e) });
  if (ws.readyState !== WebSocket.OPEN) finish(1);
});
ws.on('close', (code, reason) => {
  emit({ event: 'close', code, reason: reason.toString('utf8') });
  finish(0);
});

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    emit({ event: 'error', message: `bad command: ${line}` });
    return;
  }
  if (typeof cmd.send === 'string') {
    ws.send(cmd.send);
  } else if (cmd.close !== undefined) {
    ws.close(typeof cmd.close === 'number' ? cmd.close : 1000);
  } else {
    emit({ event: 'error', message: `unknown command: ${line}` });
  }
});
rl.on('close', () => {
  if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(1000);
});
