#!/usr/bin/env node
// End-to-end check of the gateway dashboard in headless Debian Chromium, as a person would see it.
//
//   NODE_PATH="$(scripts/browser-env)" node tests/dashboard.mjs \
//       --url http://127.0.0.1:PORT/ --screenshot /tmp/dash.png [--providers N] [--node-modules DIR]
//
// playwright-core is looked up in --node-modules DIR, then in each NODE_PATH entry (ESM ignores
// NODE_PATH, so this resolves it by hand), then in ${GANGLION_CACHE:-~/.cache/ganglion}/node.
// Exits 0 and prints one line of what it saw, or exits 1 with the reason. Bounded: at most 60 s.
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const CHROMIUM = '/usr/bin/chromium';
const TOTAL_BUDGET_MS = 60_000;
const started = Date.now();

function fail(msg) {
  process.stderr.write(`dashboard: FAIL: ${msg}\n`);
  process.exitCode = 1;
}

function usage(msg) {
  process.stderr.write(`dashboard: ${msg}\n` +
    'usage: node tests/dashboard.mjs --url URL --screenshot PATH [--providers N] [--node-modules DIR]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { providers: 1 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--url') opts.url = val();
    else if (a === '--screenshot') opts.screenshot = val();
    else if (a === '--providers') opts.providers = Number(val());
    else if (a === '--node-modules') opts.nodeModules = val();
    else if (a === '-h' || a === '--help') usage('end-to-end check of the gateway dashboard');
    else usage(`unknown argument: ${a}`);
  }
  if (!opts.url) usage('--url is required');
  if (!opts.screenshot) usage('--screenshot is required');
  if (!Number.isInteger(opts.providers) || opts.providers < 0) usage('--providers must be a whole number');
  return opts;
}

function loadPlaywright(nodeModules) {
  const dirs = [];
  if (nodeModules) dirs.push(nodeModules);
  for (const d of (process.env.NODE_PATH || '').split(path.delimiter)) if (d) dirs.push(d);
  const cache = process.env.GANGLION_CACHE || path.join(os.homedir(), '.cache', 'ganglion');
  dirs.push(path.join(cache, 'node', 'node_modules'));
  const tried = [];
  for (const d of dirs) {
    const abs = path.resolve(d);
    if (!fs.existsSync(path.join(abs, 'playwright-core', 'package.json'))) {
      tried.push(abs);
      continue;
    }
    // A require() rooted in that folder finds `playwright-core` inside it.
    const require = createRequire(path.join(abs, 'noop.js'));
    return require('playwright-core');
  }
  throw new Error(`playwright-core not found in: ${tried.join(', ')} (run scripts/browser-env and pass its output as NODE_PATH or --node-modules)`);
}

const left = () => TOTAL_BUDGET_MS - (Date.now() - started);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const url = new URL(opts.url);
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname) && !url.hostname.startsWith('127.')) {
    throw new Error(`refusing a non-loopback address: ${url.hostname}`);
  }
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing (run scripts/browser-env)`);
  const { chromium } = loadPlaywright(opts.nodeModules);

  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ganglion-dashboard-'));
  const problems = []; // console errors and page errors, any time
  let context;
  // Watchdog: whatever hangs, the script ends within the budget.
  const watchdog = setTimeout(() => {
    process.stderr.write(`dashboard: FAIL: timed out after ${TOTAL_BUDGET_MS / 1000} s\n`);
    process.exit(1);
  }, TOTAL_BUDGET_MS);
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      chromiumSandbox: false,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1440, height: 900 },
      timeout: 20_000,
    });
    const page = context.pages()[0] || (await context.newPage());
    page.on('console', (msg) => {
      if (msg.type() === 'error') {
        const loc = msg.location();
        problems.push(`console error: ${msg.text()}${loc && loc.url ? ` (${loc.url}:${loc.lineNumber})` : ''}`);
      }
    });
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));

    fs.mkdirSync(path.dirname(path.resolve(opts.screenshot)), { recursive: true });
    try {
      await check(page, opts, problems);
    } catch (e) {
      // Keep what the page looked like when it failed, next to the asked-for path.
      const shot = opts.screenshot.replace(/(\.png)?$/i, '.failed.png');
      await page.screenshot({ path: shot, fullPage: true, timeout: 5_000 }).catch(() => {});
      const extra = problems.length && !e.message.includes(problems[0]) ? ` (also: ${problems.join('; ')})` : '';
      throw new Error(`${e.message}${extra}; screenshot of the failure: ${shot}`);
    }
  } finally {
    clearTimeout(watchdog);
    if (context) await context.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
}

async function check(page, opts, problems) {
  const url = new URL(opts.url);
  const res = await page.goto(url.href, { waitUntil: 'load', timeout: 15_000 });
  if (!res || !res.ok()) throw new Error(`GET ${url.href} answered ${res ? res.status() : 'nothing'}`);

  // Waits for a condition in the page; on timeout says what it saw instead.
  const waitFor = async (what, fn, arg, describe, ms = 15_000) => {
    try {
      await page.waitForFunction(fn, arg, { timeout: Math.max(1000, Math.min(ms, left() - 5000)), polling: 200 });
    } catch (e) {
      const seen = describe ? await page.evaluate(describe, arg).catch(() => '?') : '';
      throw new Error(`${what}${seen !== '' ? `: saw ${seen}` : ''}`);
    }
  };
  const count = (sel) => page.evaluate((s) => document.querySelectorAll(s).length, sel);

  await waitFor('the world map is not drawn (want at least 100 path.country in #map)',
    () => document.querySelectorAll('#map path.country').length >= 100, null,
    () => `${document.querySelectorAll('#map path.country').length} countries`);
  const countries = await count('#map path.country');

  const n = opts.providers;
  await waitFor(`fewer than ${n} provider markers on the map (#map .provider-marker)`,
    (n) => document.querySelectorAll('#map .provider-marker').length >= n, n,
    () => `${document.querySelectorAll('#map .provider-marker').length} markers`);
  await waitFor(`fewer than ${n} rows in the providers table (#providers tbody tr)`,
    (n) => document.querySelectorAll('#providers tbody tr').length >= n, n,
    () => `${document.querySelectorAll('#providers tbody tr').length} rows`);
  if (n > 0) {
    // Zero providers asked for: don't insist; otherwise a marker must be visible on screen.
    const visible = await page.evaluate(() => {
      const svg = document.querySelector('#map').getBoundingClientRect();
      return [...document.querySelectorAll('#map .provider-marker')].filter((m) => {
        const r = m.getBoundingClientRect();
        return r.width > 0 && r.right > svg.left && r.left < svg.right && r.bottom > svg.top && r.top < svg.bottom;
      }).length;
    });
    if (visible < n) throw new Error(`only ${visible} of the provider markers lie inside the visible map, want ${n}`);
  }
  const providers = await count('#map .provider-marker');
  const rows = await count('#providers tbody tr');

  await waitFor('no robot marker on the map (#map .robot-marker)',
    () => document.querySelectorAll('#map .robot-marker').length >= 1, null,
    () => `${document.querySelectorAll('#map .robot-marker').length} robot markers`);
  const robots = await count('#map .robot-marker');

  // Numbers move: the requests counter, read twice 3 s apart.
  const readRequests = () => page.evaluate(() => {
    const t = (document.querySelector('#total-requests') || {}).textContent || '';
    const digits = t.replace(/[^0-9]/g, '');
    return { text: t.trim(), value: digits ? Number(digits) : null };
  });
  await waitFor('the total requests counter (#total-requests) shows no number',
    () => /[0-9]/.test((document.querySelector('#total-requests') || {}).textContent || ''), null,
    () => JSON.stringify((document.querySelector('#total-requests') || {}).textContent ?? 'no #total-requests'));
  const r1 = await readRequests();
  await sleep(3000);
  const r2 = await readRequests();
  if (r1.value === null || r2.value === null || !(r2.value > r1.value)) {
    throw new Error(`the total requests counter did not increase in 3 s: "${r1.text}" -> "${r2.text}"`);
  }

  await waitFor('the latency histogram has no non-empty bar (#latency-hist rect.bar)',
    () => [...document.querySelectorAll('#latency-hist rect.bar')].some((b) =>
      Number(b.getAttribute('data-count') || 0) > 0 && b.getBBox().height > 0), null,
    () => `${document.querySelectorAll('#latency-hist rect.bar').length} bars, counts ` +
      [...document.querySelectorAll('#latency-hist rect.bar')].map((b) => b.getAttribute('data-count')).join(','));
  const bars = await page.evaluate(() => [...document.querySelectorAll('#latency-hist rect.bar')]
    .filter((b) => Number(b.getAttribute('data-count') || 0) > 0).length);

  await waitFor('the deadline-hit rate (#hit-rate) shows no percentage',
    () => /\d+(\.\d+)?\s*%/.test((document.querySelector('#hit-rate') || {}).textContent || ''), null,
    () => JSON.stringify((document.querySelector('#hit-rate') || {}).textContent ?? 'no #hit-rate'), 10_000);
  const hitRate = (await page.textContent('#hit-rate')).trim();

  const live = (await page.textContent('#live').catch(() => '') || '').trim();

  await page.screenshot({ path: opts.screenshot, fullPage: true, timeout: 10_000 });

  if (problems.length) throw new Error(problems.join('; '));

  process.stdout.write(`dashboard: ${countries} countries, ${providers} providers (${rows} rows), ${robots} robots, ` +
    `requests ${r1.value} -> ${r2.value}, ${bars} latency buckets filled, hit rate ${hitRate}, ${live || 'no indicator'}; ` +
    `screenshot ${opts.screenshot}\n`);
}

main().catch((e) => fail(e && e.message ? e.message : String(e)));
