// Runs sink-websocket's browser client (the bytes the server serves at
// GET /connectd-ws.js, imported as an ES module) under node, with the `ws`
// package as its WebSocket.  Node 20 has EventTarget and CustomEvent.
//
//   node ws_browser_client.js HTTP_BASE TOKEN_FILE
//
// The token is read from TOKEN_FILE before every connect (the client's token
// callback), so a test can swap it.  Writes JSON lines: {"event":"hello"|
// "message"|"gap"|"close"|"open", "data": ...}; "stop" on stdin stops it.
const { readFileSync, writeFileSync, mkdtempSync } = require("node:fs");
const { tmpdir } = require("node:os");
const { join } = require("node:path");
const { pathToFileURL } = require("node:url");

globalThis.WebSocket = require(join(__dirname, "../../.deps/node/node_modules/ws"));

const [base, tokenFile] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");

(async () => {
  const res = await fetch(base + "/connectd-ws.js");
  if (!res.ok) throw new Error(`GET /connectd-ws.js: ${res.status}`);
  const dir = mkdtempSync(join(tmpdir(), "connectd-ws-"));
  const file = join(dir, "connectd-ws.mjs");
  writeFileSync(file, await res.text());
  const { ConnectdWS } = await import(pathToFileURL(file).href);

  const client = new ConnectdWS({
    url: base.replace(/^http/, "ws") + "/ws",
    token: () => readFileSync(tokenFile, "utf8").trim(),
    minDelayMs: 100,
    maxDelayMs: 400,
  });
  client.addEventListener("hello", (e) => out({ event: "hello", data: e.detail }));
  client.addEventListener("gap", (e) => out({ event: "gap", data: e.detail }));
  client.addEventListener("close", (e) => out({ event: "close", data: e.detail }));
  client.addEventListener("open", () => out({ event: "open" }));
  client.on("*", (msg) => out({ event: "message", data: msg, lastSeq: client.lastSeq,
                                gaps: client.gaps }));
  client.start();

  process.stdin.on("data", (d) => {
    if (String(d).includes("stop")) {
      client.stop();
      process.stdout.write("", () => process.exit(0));
    }
  });
})().catch((e) => {
  process.stderr.write(String(e.stack || e) + "\n");
  process.exit(1);
});
