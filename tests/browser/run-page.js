#!/usr/bin/env node
/*
 * Drives one page in headless Chromium (Debian's /usr/bin/chromium through
 * playwright-core) through a list of steps, and prints one JSON object with
 * what it saw. Integration tests call it through tests/integration/browser.py.
 *
 *   node tests/browser/run-page.js SPEC.json     (or the spec on stdin)
 *
 * The spec:
 *   {"url": "http://127.0.0.1:PORT/",
 *    "timeout_ms": 15000,                     each step's limit (default 15000)
 *    "viewport": {"width": 1280, "height": 800},
 *    "artifacts_dir": "/path",                screenshots go here (default
 *                                             $CONNECTD_BUILD_DIR/test-artifacts)
 *    "steps": [
 *      {"wait_for": "css selector", "state": "visible"},
 *      {"wait_for_function": "(arg) => document.title === arg", "arg": ...},
 *      {"click": "css selector"},
 *      {"fill": "css selector", "value": "text"},
 *      {"eval": "(arg) => expression", "arg": ..., "as": "name"},
 *                     (functions are source text called with the JSON "arg";
 *                     wait_for_function waits for a truthy result)
 *      {"text": "css selector", "as": "name"},
 *      {"wait_for_ws_message": "substring"},   a WebSocket frame the page received
 *      {"sleep_ms": 500},
 *      {"screenshot": "name.png", "full_page": true}
 *    ]}
 *
 * Output (stdout, one line): {"ok": true, "results": {name: value},
 * "screenshots": [paths], "console": [{type, text}], "page_errors": [...],
 * "requests": [urls the page asked for], "failed_requests": [...],
 * "websockets": [{url, sent: [...], received: [...], closed}], "elapsed_ms": n}. A step that fails (or times out) ends the run with
 * "ok": false, "error", "step" (its index) and a screenshot named
 * failure-<time>.png; the exit code is then 1 (2 for a bad spec).
 *
 * Chromium gets no network beyond what the page asks for: the tests point it
 * at 127.0.0.1 only, and component updates, metrics and background
 * networking are switched off.
 */
'use strict';

const fs = require('fs');
const path = require('path');

const ROOT = path.join(__dirname, '..', '..');
const NODE_MODULES = path.join(ROOT, '.deps', 'node', 'node_modules');

function load(name) {
  try {
    return require(path.join(NODE_MODULES, name));
  } catch (e) {
    return require(name);
  }
}

function readSpec() {
  const arg = process.argv[2];
  const text = arg && arg !== '-' ? fs.readFileSync(arg, 'utf8') : fs.readFileSync(0, 'utf8');
  const spec = JSON.parse(text);
  if (!spec || typeof spec.url !== 'string') throw new Error('spec needs a "url"');
  if (spec.steps !== undefined && !Array.isArray(spec.steps)) throw new Error('"steps" must be a list');
  return spec;
}

function artifactsDir(spec) {
  const dir = spec.artifacts_dir ||
    path.join(process.env.CONNECTD_BUILD_DIR || path.join(ROOT, 'build'), 'test-artifacts');
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

function safeName(name) {
  const base = path.basename(String(name));
  if (!/^[A-Za-z0-9._-]+$/.test(base)) throw new Error(`bad screenshot name ${JSON.stringify(name)}`);
  return base.endsWith('.png') ? base : base + '.png';
}

/* A step's function arrives as source text. Playwright would evaluate a
 * string as an expression (yielding the function itself, not its result) and
 * poll a string predicate with eval(), which a page's Content-Security-Policy
 * without 'unsafe-eval' refuses; a function object is sent over the DevTools
 * protocol instead, which the page's CSP does not govern. */
function fn(source) {
  const f = (0, eval)(`(${source})`);
  if (typeof f !== 'function') throw new Error(`not a function: ${source}`);
  return f;
}

async function runStep(page, step, out, dir, timeout) {
  const t = step.timeout_ms || timeout;
  if (step.wait_for !== undefined) {
    await page.waitForSelector(step.wait_for, { state: step.state || 'visible', timeout: t });
  } else if (step.wait_for_function !== undefined) {
    await page.waitForFunction(fn(step.wait_for_function), step.arg ?? null,
      { timeout: t, polling: 100 });
  } else if (step.click !== undefined) {
    await page.click(step.click, { timeout: t });
  } else if (step.fill !== undefined) {
    await page.fill(step.fill, String(step.value ?? ''), { timeout: t });
  } else if (step.eval !== undefined) {
    const value = await page.evaluate(fn(step.eval), step.arg ?? null);
    if (step.as) out.results[step.as] = value === undefined ? null : value;
  } else if (step.text !== undefined) {
    const value = await page.textContent(step.text, { timeout: t });
    if (step.as) out.results[step.as] = value;
  } else if (step.wait_for_ws_message !== undefined) {
    const want = String(step.wait_for_ws_message);
    const deadline = Date.now() + t;
    while (!out.websockets.some((w) => w.received.some((f) => f.includes(want)))) {
      if (Date.now() > deadline) {
        throw new Error(`no WebSocket frame containing ${JSON.stringify(want)} within ${t} ms`);
      }
      await page.waitForTimeout(50);
    }
  } else if (step.sleep_ms !== undefined) {
    await page.waitForTimeout(Number(step.sleep_ms));
  } else if (step.screenshot !== undefined) {
    const file = path.join(dir, safeName(step.screenshot));
    await page.screenshot({ path: file, fullPage: step.full_page !== false, timeout: t });
    out.screenshots.push(file);
  } else {
    throw new Error(`unknown step ${JSON.stringify(step)}`);
  }
}

async function main() {
  let spec;
  try {
    spec = readSpec();
  } catch (e) {
    process.stdout.write(JSON.stringify({ ok: false, error: `bad spec: ${e.message}` }) + '\n');
    return 2;
  }
  const { chromium } = load('playwright-core');
  const started = Date.now();
  const timeout = spec.timeout_ms || 15000;
  const dir = artifactsDir(spec);
  const out = {
    ok: false, results: {}, screenshots: [], console: [], page_errors: [], requests: [],
    failed_requests: [], websockets: [],
  };
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
      '--disable-background-networking', '--disable-component-update',
      '--disable-default-apps', '--disable-sync', '--metrics-recording-only',
      '--no-first-run', '--disable-features=Translate,OptimizationHints,MediaRouter'],
    timeout: 60000,
  });
  let page;
  let index = -1;
  try {
    const context = await browser.newContext({ viewport: spec.viewport || { width: 1280, height: 800 } });
    page = await context.newPage();
    page.on('console', (m) => out.console.push({ type: m.type(), text: m.text() }));
    page.on('pageerror', (e) => out.page_errors.push(String(e && e.stack || e)));
    page.on('request', (r) => out.requests.push(r.url()));
    page.on('requestfailed', (r) => out.failed_requests.push({
      url: r.url(), error: r.failure() ? r.failure().errorText : 'failed',
    }));
    page.on('websocket', (ws) => {
      const entry = { url: ws.url(), sent: [], received: [], closed: false };
      out.websockets.push(entry);
      const text = (f) => (typeof f.payload === 'string' ? f.payload : f.payload.toString('base64'));
      ws.on('framesent', (f) => entry.sent.push(text(f)));
      ws.on('framereceived', (f) => entry.received.push(text(f)));
      ws.on('close', () => { entry.closed = true; });
    });
    await page.goto(spec.url, { timeout, waitUntil: 'load' });
    const steps = spec.steps || [];
    for (index = 0; index < steps.length; index++) {
      await runStep(page, steps[index], out, dir, timeout);
    }
    out.ok = true;
  } catch (e) {
    out.error = String(e && e.message || e);
    if (index >= 0) out.step = index;
    if (page) {
      const file = path.join(dir, `failure-${Date.now()}.png`);
      try {
        await page.screenshot({ path: file, fullPage: true, timeout: 5000 });
        out.screenshots.push(file);
      } catch (_) { /* the page may be gone */ }
    }
  } finally {
    await browser.close().catch(() => {});
  }
  out.elapsed_ms = Date.now() - started;
  process.stdout.write(JSON.stringify(out) + '\n');
  return out.ok ? 0 : 1;
}

main().then((code) => process.exit(code), (e) => {
  process.stdout.write(JSON.stringify({ ok: false, error: String(e && e.stack || e) }) + '\n');
  process.exit(1);
});
