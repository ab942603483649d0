// What the Rust crates sign, checked by the contracts: contracts/test/fixtures/rust-signed.json is
// made by crates/ganglion-types/tests/contract_fixture.rs from fixed keys (a voucher from the
// robot's wallet, a pay-key binding from its node), and that Rust test fails if the formats drift
// from the file. Here the same file is redeemed and bound on chain.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  accounts, deployAll, deployContract, read, send, depositFor, testClient, pub, verifyNodeSignature, TOKEN, DEFAULT_PARAMS, viem,
} from './lib.mjs';

const fixture = JSON.parse(readFileSync(join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'rust-signed.json'), 'utf8'));
let sys;
let escrow;
let registry;

before(async () => {
  sys = await deployAll();
  // The fixture's voucher names a fixed escrow address: the deployed Escrow's code goes there
  // (its token and params are immutables in the code, and EIP-712's domain follows
  // address(this)), and a Registry is deployed that names it.
  const code = await pub.getCode({ address: sys.escrow.address });
  await testClient.setCode({ address: fixture.escrow, bytecode: code });
  escrow = { ...sys.escrow, address: viem.getAddress(fixture.escrow) };
  registry = await deployContract(accounts[0], 'Registry', [sys.token.address, sys.params.address, escrow.address]);
});

test('a voucher signed by the Rust wallet is redeemed on chain, once', async () => {
  const f = fixture.voucher;
  const v = { robot: f.robot, provider: f.provider, session: BigInt(f.session), cumulative: BigInt(f.cumulative) };
  assert.equal(await read(escrow, 'voucherDigest', [v]), f.digest, 'the EIP-712 digest is the same on both sides');
  await depositFor({ ...sys, escrow }, accounts[1], v.robot, v.provider, 10n * TOKEN);
  const balance = (a) => read(sys.token, 'balanceOf', [a]);
  const before = await balance(v.provider);
  await send(accounts[2], escrow, 'redeem', [v, f.signature]);
  const fee = (v.cumulative * DEFAULT_PARAMS.protocolFee) / 10_000n;
  assert.equal((await balance(v.provider)) - before, v.cumulative - fee);
  await send(accounts[2], escrow, 'redeem', [v, f.signature]);
  assert.equal((await balance(v.provider)) - before, v.cumulative - fee, 'a replay pays nothing');
});

test('a pay-key binding signed by the Rust node binds on chain, and its Ed25519 half verifies', async () => {
  const b = fixture.binding;
  await send(accounts[3], registry, 'bind', [b.node, b.pay_key_signature, b.node_signature]);
  assert.equal((await read(registry, 'nodeOf', [b.address])).toLowerCase(), b.node.toLowerCase());
  assert.ok(verifyNodeSignature(b.node, b.address, b.node_signature), 'the node key signed the address');
});
