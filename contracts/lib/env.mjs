// Finds the contracts' node_modules (installed by scripts/contracts-env, outside the repo) and
// gives a require() that loads from it: NODE_PATH if it names a folder holding solc, else what
// scripts/contracts-env prints (it installs on first use).
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const CONTRACTS = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const ROOT = resolve(CONTRACTS, '..');

function findModules() {
  for (const dir of (process.env.NODE_PATH || '').split(':').filter(Boolean)) {
    if (existsSync(join(dir, 'solc', 'package.json'))) return resolve(dir);
  }
  const out = execFileSync(join(ROOT, 'scripts', 'contracts-env'), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  return out.trim().split('\n').pop();
}

export const MODULES = findModules();
export const requireDep = createRequire(join(MODULES, '..', 'package.json'));
export const ANVIL = join(MODULES, '@foundry-rs', 'anvil-linux-amd64', 'bin', 'anvil');
