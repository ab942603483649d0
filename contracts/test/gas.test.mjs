// Gas per redemption, single and batched (100 sessions), and the cost of settling 1,000 answered
// requests at a stated L2 gas price. Prints the figures (the README quotes them).
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { accounts, deployAll, read, send, approve, signVoucher, randomAccount, TOKEN } from './lib.mjs';

const GAS_PRICE_GWEI = Number(process.env.L2_GAS_PRICE_GWEI || 0.01); // Arbitrum One's usual floor
const ETH_USD = Number(process.env.ETH_USD || 3000);
const BATCH = 100;

let sys;
const funder = accounts[1];
const provider = accounts[2];
const figures = {};

before(async () => {
  sys = await deployAll();
  await approve(funder, sys, sys.escrow, 10n ** 30n);
});

const usd = (gas) => (Number(gas) * GAS_PRICE_GWEI * 1e-9 * ETH_USD);

test('gas: one redemption', async () => {
  const robot = randomAccount();
  await send(funder, sys.escrow, 'deposit', [robot.address, provider.address, 1000n * TOKEN]);
  const v1 = { robot: robot.address, provider: provider.address, session: 1n, cumulative: 10n * TOKEN };
  const first = await send(provider, sys.escrow, 'redeem', [v1, await signVoucher(robot, sys.escrow, v1)]);
  const v2 = { ...v1, cumulative: 20n * TOKEN };
  const later = await send(provider, sys.escrow, 'redeem', [v2, await signVoucher(robot, sys.escrow, v2)]);
  const replay = await send(provider, sys.escrow, 'redeem', [v2, await signVoucher(robot, sys.escrow, v2)]);
  figures.singleFirst = first.gasUsed;
  figures.singleLater = later.gasUsed;
  figures.singleReplay = replay.gasUsed;
  assert.ok(first.gasUsed < 150_000n);
});

test(`gas: redeemBatch of ${BATCH} sessions (${BATCH} robots, one provider)`, { timeout: 300_000 }, async () => {
  const robots = Array.from({ length: BATCH }, randomAccount);
  for (const r of robots) await send(funder, sys.escrow, 'deposit', [r.address, provider.address, 1000n * TOKEN]);
  const round = async (cumulative) => {
    const vs = robots.map((r, i) => ({ robot: r.address, provider: provider.address, session: BigInt(i), cumulative }));
    const sigs = await Promise.all(vs.map((v, i) => signVoucher(robots[i], sys.escrow, v)));
    const p0 = await read(sys.token, 'balanceOf', [provider.address]);
    const receipt = await send(provider, sys.escrow, 'redeemBatch', [vs, sigs]);
    assert.ok((await read(sys.token, 'balanceOf', [provider.address])) > p0);
    return receipt;
  };
  const first = await round(5n * TOKEN);
  const later = await round(9n * TOKEN);
  figures.batchFirst = first.gasUsed / BigInt(BATCH);
  figures.batchLater = later.gasUsed / BigInt(BATCH);
  figures.batchTotalFirst = first.gasUsed;
  figures.batchTotalLater = later.gasUsed;
  // Calldata per voucher: 4 words of struct, a 65-byte signature padded to 3 words, its length
  // and its offset: 9 words = 288 bytes.
  figures.calldataPerVoucher = 288;
});

test('gas: report', () => {
  const f = figures;
  const lines = [
    `gas: single redeem, first voucher of a session: ${f.singleFirst}`,
    `gas: single redeem, later voucher of the session: ${f.singleLater}`,
    `gas: single redeem, replay (pays nothing): ${f.singleReplay}`,
    `gas: redeemBatch of ${BATCH} sessions, first vouchers: ${f.batchTotalFirst} total, ${f.batchFirst} per voucher`,
    `gas: redeemBatch of ${BATCH} sessions, later vouchers: ${f.batchTotalLater} total, ${f.batchLater} per voucher`,
    `gas: calldata per batched voucher: ${f.calldataPerVoucher} bytes`,
    `cost at ${GAS_PRICE_GWEI} gwei L2 gas, ETH at $${ETH_USD} (L2 execution only; the L1 data fee for the calldata is extra):`,
  ];
  for (const n of [1, 10, 100]) {
    const gas = f.batchFirst * BigInt(n);
    lines.push(`  1,000 answers over ${n} session(s) = ${n} batched redemption(s): ${gas} gas = $${usd(gas).toFixed(6)}`);
  }
  lines.push(`  1,000 answers over 1 session, redeemed alone: ${f.singleFirst} gas = $${usd(f.singleFirst).toFixed(6)}`);
  console.log(lines.join('\n'));
});
