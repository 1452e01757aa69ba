// A WebSocket client for sink-websocket's tests, on the `ws` npm package
// (an implementation we did not write).  One connection per process:
//
//   node ws_client.js URL [HEADERS_JSON]
//
// Writes one JSON line to stdout per event:
//   {"event":"open"}
//   {"event":"message","data":<the parsed message>}
//   {"event":"unexpected-response","status":401,"body":"..."}
//   {"event":"close","code":1001,"reason":"..."}
//   {"event":"error","message":"..."}
// and reads commands from stdin, one per line:
//   pause    stop reading the socket (the server's send queue grows)
//   resume   read again
//   close    close normally (1000)
// It exits after the close.
const path = require("path");
const WebSocket = require(path.join(__dirname, "../../.deps/node/node_modules/ws"));

const url = process.argv[2];
const headers = process.argv[3] ? JSON.parse(process.argv[3]) : {};
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
// Exits once stdout (a pipe: written asynchronously) has taken the last line.
const finish = (o) => process.stdout.write(JSON.stringify(o) + "\n", () => process.exit(0));

const ws = new WebSocket(url, { headers, perMessageDeflate: false });
ws.on("open", () => out({ event: "open" }));
ws.on("message", (data) => {
  const text = data.toString("utf8");
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    parsed = { unparsable: text };
  }
  out({ event: "message", data: parsed });
});
ws.on("unexpected-response", (req, res) => {
  let body = "";
  res.on("data", (c) => (body += c));
  res.on("end", () => {
    finish({ event: "unexpected-response", status: res.statusCode, body,
             headers: res.headers });
  });
});
ws.on("close", (code, reason) => {
  finish({ event: "close", code, reason: reason.toString() });
});
ws.on("error", (e) => out({ event: "error", message: String(e.message || e) }));

let buf = "";
process.stdin.on("data", (chunk) => {
  buf += chunk;
  let i;
  while ((i = buf.indexOf("\n")) >= 0) {
    const cmd = buf.slice(0, i).trim();
    buf = buf.slice(i + 1);
    if (cmd === "pause") ws._socket && ws._socket.pause();
    else if (cmd === "resume") ws._socket && ws._socket.resume();
    else if (cmd === "close") ws.close(1000, "test done");
  }
});
