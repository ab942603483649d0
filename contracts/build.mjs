#!/usr/bin/env node
// Compiles contracts/src/*.sol with solc-js (the version pinned in package.json), standard JSON
// input, fixed settings, and writes contracts/artifacts/<Name>.json (abi, bytecode,
// deployedBytecode). `--check` recompiles and exits 1 if the committed artifacts differ.
//
//   node contracts/build.mjs [--check]
import { readFileSync, readdirSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { CONTRACTS, MODULES, requireDep } from './lib/env.mjs';

const check = process.argv.includes('--check');
const pkg = JSON.parse(readFileSync(join(CONTRACTS, 'package.json'), 'utf8'));
const SOLC_VERSION = pkg.dependencies.solc;
const solc = requireDep('solc');
const loaded = solc.version();
if (!loaded.startsWith(`${SOLC_VERSION}+`)) {
  console.error(`build: solc ${loaded} loaded, package.json pins ${SOLC_VERSION}`);
  process.exit(1);
}

// Fixed settings: change them only with a rebuild of the committed artifacts.
const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: 'cancun',
  metadata: { bytecodeHash: 'ipfs' },
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
};
// Contracts that get an artifact: ours, and OpenZeppelin's TimelockController (deployed as is).
const WANT = {
  'src/GanglionToken.sol': ['GanglionToken'],
  'src/Params.sol': ['Params'],
  'src/Registry.sol': ['Registry'],
  'src/Escrow.sol': ['Escrow'],
  'src/Slashing.sol': ['Slashing'],
  'src/GanglionGovernor.sol': ['GanglionGovernor'],
  'src/Timelock.sol': [],
  '@openzeppelin/contracts/governance/TimelockController.sol': ['TimelockController'],
};

const srcDir = join(CONTRACTS, 'src');
const sources = {};
for (const f of readdirSync(srcDir).filter((f) => f.endsWith('.sol')).sort()) {
  sources[`src/${f}`] = { content: readFileSync(join(srcDir, f), 'utf8') };
}
for (const k of Object.keys(WANT)) {
  if (k.startsWith('src/') && !sources[k]) throw new Error(`missing ${k}`);
}

function findImports(path) {
  if (path.startsWith('@openzeppelin/')) {
    const file = join(MODULES, path);
    if (existsSync(file)) return { contents: readFileSync(file, 'utf8') };
  }
  return { error: `not found: ${path}` };
}

const input = { language: 'Solidity', sources, settings: SETTINGS };
const started = Date.now();
const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (output.errors || []).filter((e) => e.severity === 'error');
for (const e of output.errors || []) {
  if (e.severity === 'error' || !e.sourceLocation?.file?.startsWith('@openzeppelin/')) {
    console.error(e.formattedMessage);
  }
}
if (errors.length) process.exit(1);
console.error(`build: solc ${loaded}, ${Object.keys(output.sources).length} sources, ${((Date.now() - started) / 1000).toFixed(1)} s`);

const artifactsDir = join(CONTRACTS, 'artifacts');
mkdirSync(artifactsDir, { recursive: true });
let differ = 0;
for (const [file, names] of Object.entries(WANT)) {
  for (const name of names) {
    const c = output.contracts[file]?.[name];
    if (!c) throw new Error(`no output for ${file}:${name}`);
    const artifact = {
      contractName: name,
      sourceName: file,
      compiler: { solc: loaded, settings: { optimizer: SETTINGS.optimizer, evmVersion: SETTINGS.evmVersion, metadata: SETTINGS.metadata } },
      abi: c.abi,
      bytecode: `0x${c.evm.bytecode.object}`,
      deployedBytecode: `0x${c.evm.deployedBytecode.object}`,
    };
    const text = `${JSON.stringify(artifact, null, 2)}\n`;
    const path = join(artifactsDir, `${name}.json`);
    const size = c.evm.deployedBytecode.object.length / 2;
    const note = size > 24576 ? ' (over the EIP-170 limit of 24576!)' : '';
    if (check) {
      const old = existsSync(path) ? readFileSync(path, 'utf8') : null;
      if (old !== text) {
        console.error(`build --check: artifacts/${name}.json differs from a fresh build`);
        differ++;
      } else {
        console.error(`build --check: artifacts/${name}.json matches (${size} bytes deployed)${note}`);
      }
    } else {
      writeFileSync(path, text);
      console.error(`build: wrote artifacts/${name}.json (${size} bytes deployed)${note}`);
    }
  }
}
if (differ) process.exit(1);
