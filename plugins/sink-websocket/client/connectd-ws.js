/*
 * connectd-ws.js — the browser client of connectd's WebSocket sink.
 *
 * Served by the sink's server at GET /connectd-ws.js.  An ES module that
 * also sets window.ConnectdWS, so both of these work:
 *   import { ConnectdWS } from "/connectd-ws.js";
 *   <script type="module" src="/connectd-ws.js"></script> ... new window.ConnectdWS(...)
 *
 *   const ws = new ConnectdWS({
 *     url: "wss://push.example.com/ws",
 *     token: async () => (await fetch("/token")).text(), // called before each connect
 *   });
 *   ws.on("KYC_VERIFIED", (msg) => ...);   // by the message's "type"
 *   ws.addEventListener("message", (e) => e.detail); // DOM CustomEvents too
 *   ws.start();
 *
 * It reconnects with exponential backoff and full jitter, resumes from the
 * last seq it saw (?since=N: the server replays what was missed), and counts
 * gaps (a seq that skips numbers: messages older than the server's replay
 * window).  The server's first message on a socket is a hello,
 * {"type":"connectd.hello","lastSeq":N,"resumeFrom":M,...}: the replay that
 * follows starts after M.  Events: "open", "hello", "message", "gap", "close", "error",
 * plus one per message type.
 */
const ConnectdWS = (() => {
  const Base = typeof EventTarget !== "undefined" ? EventTarget : class {};
  const makeEvent = (type, detail) =>
    typeof CustomEvent !== "undefined"
      ? new CustomEvent(type, { detail })
      : Object.assign(new Event(type), { detail });

  class ConnectdWS extends Base {
    constructor(opts) {
      super();
      if (!opts || !opts.url) throw new Error("ConnectdWS: url is required");
      this.url = opts.url;
      this.token = opts.token || null; // () => string | Promise<string>
      this.minDelay = opts.minDelayMs || 500;
      this.maxDelay = opts.maxDelayMs || 30000;
      this.lastSeq = typeof opts.since === "number" ? opts.since : null;
      this.gaps = 0;
      this.attempt = 0;
      this.socket = null;
      this.stopped = true;
      this.handlers = new Map();
      this.timer = null;
    }

    /* Callbacks by type ("*" for every message); returns an unsubscribe. */
    on(type, fn) {
      if (!this.handlers.has(type)) this.handlers.set(type, new Set());
      this.handlers.get(type).add(fn);
      return () => this.handlers.get(type).delete(fn);
    }

    /* A DOM CustomEvent (detail = the payload) and the on() callbacks;
     * a callback that throws does not stop the others. */
    emit(type, detail) {
      if (type !== "*" && typeof this.dispatchEvent === "function")
        this.dispatchEvent(makeEvent(type, detail));
      for (const fn of this.handlers.get(type) || []) {
        try {
          fn(detail);
        } catch (e) {
          setTimeout(() => {
            throw e;
          });
        }
      }
    }

    start() {
      if (!this.stopped) return this;
      this.stopped = false;
      this.connect();
      return this;
    }

    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
      if (this.socket) this.socket.close(1000, "client stop");
      this.socket = null;
    }

    async connect() {
      if (this.stopped) return;
      let url;
      try {
        const u = new URL(this.url, typeof location !== "undefined" ? location.href : undefined);
        if (this.token) u.searchParams.set("token", await this.token());
        if (this.lastSeq !== null) u.searchParams.set("since", String(this.lastSeq));
        url = u.toString();
      } catch (e) {
        this.emit("error", e);
        this.retry();
        return;
      }
      if (this.stopped) return;
      const s = new WebSocket(url);
      this.socket = s;
      s.onopen = () => {
        this.attempt = 0;
        this.emit("open", { url: this.url });
      };
      s.onmessage = (ev) => this.receive(ev.data);
      s.onerror = () => this.emit("error", new Error("websocket error"));
      s.onclose = (ev) => {
        if (this.socket === s) this.socket = null;
        this.emit("close", { code: ev.code, reason: ev.reason });
        this.retry();
      };
    }

    receive(text) {
      let msg;
      try {
        msg = JSON.parse(text);
      } catch (e) {
        this.emit("error", e);
        return;
      }
      if (msg && msg.type === "connectd.hello") {
        // The server's replay starts after resumeFrom: our own since, or,
        // when its counter started again, a lower number (take it).
        if (this.lastSeq === null || msg.resumeFrom < this.lastSeq) this.lastSeq = msg.resumeFrom;
        this.emit("hello", msg);
        return;
      }
      if (msg && typeof msg.seq === "number") {
        if (this.lastSeq !== null && msg.seq <= this.lastSeq) return; // already seen
        if (this.lastSeq !== null && msg.seq > this.lastSeq + 1) {
          this.gaps += msg.seq - this.lastSeq - 1;
          this.emit("gap", { from: this.lastSeq + 1, to: msg.seq - 1, gaps: this.gaps });
        }
        this.lastSeq = msg.seq;
      }
      this.emit("message", msg);
      if (msg && typeof msg.type === "string") this.emit(msg.type, msg);
      this.emit("*", msg);
    }

    retry() {
      if (this.stopped) return;
      clearTimeout(this.timer);
      const cap = Math.min(this.maxDelay, this.minDelay * 2 ** this.attempt);
      this.attempt = Math.min(this.attempt + 1, 30);
      this.timer = setTimeout(() => this.connect(), Math.random() * cap);
    }
  }
  return ConnectdWS;
})();

if (typeof window !== "undefined") window.ConnectdWS = ConnectdWS;
export { ConnectdWS };
export default ConnectdWS;
