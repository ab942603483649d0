// Vouchers: payment of the increase, replays, forgeries, the deposit limit, batches, withdrawal.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import {
  accounts, deployAll, read, send, reverts, signVoucher, depositFor, increaseTime, randomAccount, TOKEN, DEFAULT_PARAMS, viem,
} from './lib.mjs';

let sys;
const robot = accounts[1];
const provider = accounts[2];
const other = accounts[3];
const bal = (a) => read(sys.token, 'balanceOf', [a.address ?? a]);
const deposit = async (r) => (await read(sys.escrow, 'accounts', [r.address ?? r]))[0];

before(async () => {
  sys = await deployAll();
  await depositFor(sys, robot, robot, 1000n * TOKEN);
});

test('redeeming pays the increase less the fee; a replay or an older voucher pays nothing', async () => {
  const v = { robot: robot.address, provider: provider.address, session: 1n, cumulative: 10n * TOKEN };
  const sig = await signVoucher(robot, sys.escrow, v);
  const p0 = await bal(provider);
  const t0 = await bal(sys.treasury);
  await send(other, sys.escrow, 'redeem', [v, sig]); // anyone may submit; the provider is paid
  const fee = (10n * TOKEN * DEFAULT_PARAMS.protocolFee) / 10_000n;
  assert.equal((await bal(provider)) - p0, 10n * TOKEN - fee);
  assert.equal((await bal(sys.treasury)) - t0, fee);
  assert.equal(await deposit(robot), 990n * TOKEN);

  // Replay: succeeds and pays nothing.
  const { result } = await viem.createPublicClient({ transport: viem.http(process.env.ANVIL_URL) }).simulateContract({
    address: sys.escrow.address, abi: sys.escrow.abi, functionName: 'redeem', args: [v, sig], account: other,
  });
  assert.equal(result, 0n);
  await send(other, sys.escrow, 'redeem', [v, sig]);
  assert.equal((await bal(provider)) - p0, 10n * TOKEN - fee);
  assert.equal(await deposit(robot), 990n * TOKEN);

  // A higher voucher pays only the difference; then the older one pays nothing.
  const v2 = { ...v, cumulative: 25n * TOKEN };
  await send(provider, sys.escrow, 'redeem', [v2, await signVoucher(robot, sys.escrow, v2)]);
  assert.equal(await deposit(robot), 975n * TOKEN);
  await send(provider, sys.escrow, 'redeem', [v, sig]);
  assert.equal(await deposit(robot), 975n * TOKEN);
  assert.equal(await read(sys.escrow, 'redeemed', [await read(sys.escrow, 'sessionKey', [robot.address, provider.address, 1n])]), 25n * TOKEN);
});

test('a forged voucher pays nothing: wrong signer, tampered fields, high s, bad v', async () => {
  const before = await deposit(robot);
  const v = { robot: robot.address, provider: provider.address, session: 2n, cumulative: 5n * TOKEN };
  const good = await signVoucher(robot, sys.escrow, v);
  // Signed by someone else.
  await reverts(send(provider, sys.escrow, 'redeem', [v, await signVoucher(other, sys.escrow, v)]), 'BadSigner');
  // Tampered amount, provider, session.
  await reverts(send(provider, sys.escrow, 'redeem', [{ ...v, cumulative: 500n * TOKEN }, good]), 'BadSigner');
  await reverts(send(provider, sys.escrow, 'redeem', [{ ...v, provider: other.address }, good]), 'BadSigner');
  await reverts(send(provider, sys.escrow, 'redeem', [{ ...v, session: 3n }, good]), 'BadSigner');
  // Signed for another contract (domain).
  await reverts(send(provider, sys.escrow, 'redeem', [v, await signVoucher(robot, { address: sys.registry.address }, v)]), 'BadSigner');
  // The same signature with s flipped to the upper half (malleability) is refused.
  const n = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
  const r = good.slice(2, 66);
  const s = BigInt(`0x${good.slice(66, 130)}`);
  const vByte = parseInt(good.slice(130, 132), 16);
  const highS = `0x${r}${(n - s).toString(16).padStart(64, '0')}${(vByte === 27 ? 28 : 27).toString(16)}`;
  await reverts(send(provider, sys.escrow, 'redeem', [v, highS]), 'ECDSAInvalidSignatureS');
  // v other than 27/28, and a short signature.
  await reverts(send(provider, sys.escrow, 'redeem', [v, `${good.slice(0, 130)}01`]), 'ECDSAInvalidSignature');
  await reverts(send(provider, sys.escrow, 'redeem', [v, good.slice(0, 128)]), 'ECDSAInvalidSignatureLength');
  assert.equal(await deposit(robot), before);
  // The genuine one still works.
  await send(provider, sys.escrow, 'redeem', [v, good]);
  assert.equal(await deposit(robot), before - 5n * TOKEN);
});

test('redemption past the deposit is refused whole (revert, not partial)', async () => {
  const poor = randomAccount();
  await depositFor(sys, other, poor, 3n * TOKEN);
  const v = { robot: poor.address, provider: provider.address, session: 9n, cumulative: 3n * TOKEN + 1n };
  const p0 = await bal(provider);
  await reverts(send(provider, sys.escrow, 'redeem', [v, await signVoucher(poor, sys.escrow, v)]), 'InsufficientDeposit');
  assert.equal(await deposit(poor), 3n * TOKEN);
  assert.equal(await bal(provider), p0);
  const [increase, covered] = await read(sys.escrow, 'redeemable', [v]);
  assert.equal(increase, 3n * TOKEN + 1n);
  assert.equal(covered, false);
  // Exactly the deposit is fine.
  const ok = { ...v, cumulative: 3n * TOKEN };
  await send(provider, sys.escrow, 'redeem', [ok, await signVoucher(poor, sys.escrow, ok)]);
  assert.equal(await deposit(poor), 0n);
});

test('redeemBatch pays many sessions at once, all or nothing', async () => {
  const robots = [randomAccount(), randomAccount(), randomAccount()];
  for (const r of robots) await depositFor(sys, other, r, 10n * TOKEN);
  const vs = robots.map((r, i) => ({ robot: r.address, provider: i === 2 ? other.address : provider.address, session: BigInt(100 + i), cumulative: BigInt(i + 1) * TOKEN }));
  const sigs = await Promise.all(vs.map((v, i) => signVoucher(robots[i], sys.escrow, v)));
  // One uncovered voucher reverts the batch.
  const tooMuch = { ...vs[1], cumulative: 11n * TOKEN };
  await reverts(send(provider, sys.escrow, 'redeemBatch', [[vs[0], tooMuch], [sigs[0], await signVoucher(robots[1], sys.escrow, tooMuch)]]), 'InsufficientDeposit');
  await reverts(send(provider, sys.escrow, 'redeemBatch', [[vs[0]], []]), 'LengthMismatch');
  const p0 = await bal(provider);
  const o0 = await bal(other);
  await send(provider, sys.escrow, 'redeemBatch', [[...vs, vs[0]], [...sigs, sigs[0]]]); // includes a replay
  const fee = (x) => (x * DEFAULT_PARAMS.protocolFee) / 10_000n;
  assert.equal((await bal(provider)) - p0, 3n * TOKEN - fee(TOKEN) - fee(2n * TOKEN));
  assert.equal((await bal(other)) - o0, 3n * TOKEN - fee(3n * TOKEN));
  for (const [i, r] of robots.entries()) assert.equal(await deposit(r), 10n * TOKEN - BigInt(i + 1) * TOKEN);
});

test('a robot withdraws unspent deposit only after the delay; providers can redeem meanwhile', async () => {
  const r = accounts[4];
  await depositFor(sys, r, r, 100n * TOKEN);
  await reverts(send(r, sys.escrow, 'withdraw'), 'NothingPending');
  await reverts(send(r, sys.escrow, 'requestWithdrawal', [101n * TOKEN]), 'InsufficientDeposit');
  await send(r, sys.escrow, 'requestWithdrawal', [100n * TOKEN]);
  await reverts(send(r, sys.escrow, 'withdraw'), 'TooEarly');
  const v = { robot: r.address, provider: provider.address, session: 1n, cumulative: 40n * TOKEN };
  await send(provider, sys.escrow, 'redeem', [v, await signVoucher(r, sys.escrow, v)]);
  await increaseTime(DEFAULT_PARAMS.withdrawalDelay - 10n);
  await reverts(send(r, sys.escrow, 'withdraw'), 'TooEarly');
  await increaseTime(10n);
  const b0 = await bal(r);
  await send(r, sys.escrow, 'withdraw');
  assert.equal((await bal(r)) - b0, 60n * TOKEN); // what was left of the 100 requested
  assert.equal(await deposit(r), 0n);
  await reverts(send(r, sys.escrow, 'withdraw'), 'NothingPending');
});
