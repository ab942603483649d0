#!/usr/bin/env node
// Runs the contract tests against a real anvil node:
//   node contracts/test/run.mjs [file.test.mjs ...]
// Installs the dependencies if needed (scripts/contracts-env), starts anvil on a free port,
// runs contracts/test/*.test.mjs one file at a time with node's test runner (each file deploys
// its own contracts), stops anvil, and exits non-zero if any test failed.
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ANVIL, CONTRACTS, MODULES } from '../lib/env.mjs';

const testDir = join(CONTRACTS, 'test');
const files = process.argv.slice(2).length
  ? process.argv.slice(2).map((f) => resolve(f))
  : readdirSync(testDir).filter((f) => f.endsWith('.test.mjs')).sort().map((f) => join(testDir, f));

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

async function waitReady(url, anvil) {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (anvil.exitCode !== null) throw new Error(`anvil exited with ${anvil.exitCode}`);
    try {
      const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'eth_chainId', params: [] }) });
      if (r.ok) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('anvil did not answer within 30 s');
}

const port = await freePort();
const url = `http://127.0.0.1:${port}`;
const accounts = 20;
const anvil = spawn(ANVIL, ['--host', '127.0.0.1', '--port', String(port), '--chain-id', '31337', '--accounts', String(accounts), '--balance', '1000000', '--silent', '--hardfork', 'cancun'], { stdio: ['ignore', 'ignore', 'inherit'] });
let code = 1;
try {
  await waitReady(url, anvil);
  console.error(`run: anvil on ${url}; ${files.length} test files`);
  code = await new Promise((ok) => {
    const t = spawn(process.execPath, ['--test', '--test-concurrency=1', '--test-reporter=spec', ...files], {
      stdio: 'inherit',
      env: { ...process.env, ANVIL_URL: url, ANVIL_ACCOUNTS: String(accounts), NODE_PATH: MODULES },
    });
    t.on('exit', (c, sig) => ok(c ?? (sig ? 1 : 0)));
  });
} catch (e) {
  console.error(`run: ${e.message}`);
  code = 1;
} finally {
  anvil.kill('SIGTERM');
}
process.exit(code);
