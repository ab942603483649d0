// Vouchers: payment of the increase, replays, forgeries, the channel limit, batches that skip bad
// vouchers, fees however redemptions are split, withdrawal with its delay and lapse, and the
// attacks the per-(robot, provider) channels stop.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import {
  accounts, deployAll, read, send, reverts, signVoucher, depositFor, increaseTime, randomAccount, TOKEN, DEFAULT_PARAMS, viem,
  parseEventLogs,
} from './lib.mjs';

let sys;
const robot = accounts[1];
const provider = accounts[2];
const other = accounts[3];
const bal = (a) => read(sys.token, 'balanceOf', [a.address ?? a]);
// The balance of the channel r → p (p: the provider by default).
const deposit = async (r, p = provider) => (await read(sys.escrow, 'channels', [r.address ?? r, p.address ?? p]))[0];
const fee = (x) => (x * DEFAULT_PARAMS.protocolFee) / 10_000n;

before(async () => {
  sys = await deployAll();
  await depositFor(sys, robot, robot, provider, 1000n * TOKEN);
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
  await depositFor(sys, other, poor, provider, 3n * TOKEN);
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

test('redeemBatch pays many sessions at once; replays pay nothing', async () => {
  const robots = [randomAccount(), randomAccount(), randomAccount()];
  const payees = [provider, provider, other];
  for (const [i, r] of robots.entries()) await depositFor(sys, other, r, payees[i], 10n * TOKEN);
  const vs = robots.map((r, i) => ({ robot: r.address, provider: payees[i].address, session: BigInt(100 + i), cumulative: BigInt(i + 1) * TOKEN }));
  const sigs = await Promise.all(vs.map((v, i) => signVoucher(robots[i], sys.escrow, v)));
  await reverts(send(provider, sys.escrow, 'redeemBatch', [[vs[0]], []]), 'LengthMismatch');
  const p0 = await bal(provider);
  const o0 = await bal(other);
  await send(provider, sys.escrow, 'redeemBatch', [[...vs, vs[0]], [...sigs, sigs[0]]]); // includes a replay
  assert.equal((await bal(provider)) - p0, 3n * TOKEN - fee(TOKEN) - fee(2n * TOKEN));
  assert.equal((await bal(other)) - o0, 3n * TOKEN - fee(3n * TOKEN));
  for (const [i, r] of robots.entries()) assert.equal(await deposit(r, payees[i]), 10n * TOKEN - BigInt(i + 1) * TOKEN);
});

test('a batch with an uncovered, a forged and a malformed voucher pays the others and skips those', async () => {
  const robots = [randomAccount(), randomAccount(), randomAccount(), randomAccount(), randomAccount()];
  for (const r of robots) await depositFor(sys, other, r, provider, 10n * TOKEN);
  const vs = robots.map((r, i) => ({ robot: r.address, provider: provider.address, session: BigInt(200 + i), cumulative: 2n * TOKEN }));
  const sigs = await Promise.all(vs.map((v, i) => signVoucher(robots[i], sys.escrow, v)));
  vs[1] = { ...vs[1], cumulative: 11n * TOKEN }; // more than its channel holds
  sigs[1] = await signVoucher(robots[1], sys.escrow, vs[1]);
  sigs[2] = await signVoucher(other, sys.escrow, vs[2]); // signed by someone else
  sigs[3] = sigs[3].slice(0, 128); // too short to recover
  const p0 = await bal(provider);
  const rc = await send(other, sys.escrow, 'redeemBatch', [vs, sigs]);
  assert.equal((await bal(provider)) - p0, 2n * (2n * TOKEN - fee(2n * TOKEN)), 'the two good vouchers are paid');
  assert.equal(await deposit(robots[0]), 8n * TOKEN);
  assert.equal(await deposit(robots[4]), 8n * TOKEN);
  for (const i of [1, 2, 3]) {
    assert.equal(await deposit(robots[i]), 10n * TOKEN, 'a skipped voucher is not booked');
    assert.equal(await read(sys.escrow, 'redeemed', [await read(sys.escrow, 'sessionKey', [vs[i].robot, vs[i].provider, vs[i].session])]), 0n);
  }
  const skipped = parseEventLogs({ abi: sys.escrow.abi, logs: rc.logs, eventName: 'Skipped' });
  assert.deepEqual(skipped.map((e) => [e.args.robot, Number(e.args.reason)]), [[robots[1].address, 1], [robots[2].address, 0], [robots[3].address, 0]]);
  // A single redeem of the same vouchers still reverts.
  await reverts(send(provider, sys.escrow, 'redeem', [vs[1], sigs[1]]), 'InsufficientDeposit');
  await reverts(send(provider, sys.escrow, 'redeem', [vs[2], sigs[2]]), 'BadSigner');
  await reverts(send(provider, sys.escrow, 'redeem', [vs[3], sigs[3]]), 'ECDSAInvalidSignatureLength');
});

test('the fee is the same however the redemptions of a session are split', async () => {
  const r = randomAccount();
  await depositFor(sys, other, r, provider, 10n * TOKEN);
  // 99 base units at 1 %: one redemption of 99 pays 0 fee; 99 redemptions of 1 would too if the
  // fee were taken per increase. Go to 1,000 units in steps of 1, 99, 100, then one of 800.
  const t0 = await bal(sys.treasury);
  const p0 = await bal(provider);
  let cumulative = 0n;
  for (const step of [1n, 99n, 100n, 800n]) {
    cumulative += step;
    const v = { robot: r.address, provider: provider.address, session: 1n, cumulative };
    await send(provider, sys.escrow, 'redeem', [v, await signVoucher(r, sys.escrow, v)]);
  }
  for (let i = 0; i < 10; i++) { // then ten batched steps of 1
    cumulative += 1n;
    const v = { robot: r.address, provider: provider.address, session: 1n, cumulative };
    await send(provider, sys.escrow, 'redeemBatch', [[v], [await signVoucher(r, sys.escrow, v)]]);
  }
  assert.equal(cumulative, 1010n);
  assert.equal((await bal(sys.treasury)) - t0, fee(1010n), 'fee on the cumulative total');
  assert.equal((await bal(provider)) - p0, 1010n - fee(1010n));
  // And the same session redeemed at once by another robot pays the same fee.
  const r2 = randomAccount();
  await depositFor(sys, other, r2, provider, 10n * TOKEN);
  const t1 = await bal(sys.treasury);
  const v = { robot: r2.address, provider: provider.address, session: 1n, cumulative: 1010n };
  await send(provider, sys.escrow, 'redeem', [v, await signVoucher(r2, sys.escrow, v)]);
  assert.equal((await bal(sys.treasury)) - t1, fee(1010n));
});

test("a robot's voucher to an address it controls cannot touch another provider's channel", async () => {
  const r = randomAccount();
  const sink = randomAccount(); // the robot's own second address
  await depositFor(sys, other, r, provider, 50n * TOKEN);
  assert.equal(await deposit(r, sink), 0n);
  const self = { robot: r.address, provider: sink.address, session: 1n, cumulative: 50n * TOKEN };
  const selfSig = await signVoucher(r, sys.escrow, self);
  assert.deepEqual(await read(sys.escrow, 'redeemable', [self]), [50n * TOKEN, false]);
  await reverts(send(other, sys.escrow, 'redeem', [self, selfSig]), 'InsufficientDeposit');
  await send(other, sys.escrow, 'redeemBatch', [[self], [selfSig]]); // skipped
  assert.equal(await bal(sink), 0n);
  assert.equal(await deposit(r, provider), 50n * TOKEN, "the honest provider's channel is intact");
  // The honest provider still redeems all of it.
  const v = { robot: r.address, provider: provider.address, session: 1n, cumulative: 50n * TOKEN };
  await send(provider, sys.escrow, 'redeem', [v, await signVoucher(r, sys.escrow, v)]);
  assert.equal(await deposit(r, provider), 0n);
  // Nor can one deposit be promised to two providers: a second provider's channel is empty.
  const v2 = { ...v, provider: other.address };
  await reverts(send(other, sys.escrow, 'redeem', [v2, await signVoucher(r, sys.escrow, v2)]), 'InsufficientDeposit');
});

test('a robot withdraws unspent deposit only after the delay; providers can redeem meanwhile', async () => {
  const r = accounts[4];
  await depositFor(sys, r, r, provider, 100n * TOKEN);
  await depositFor(sys, r, r, other, 7n * TOKEN);
  await reverts(send(r, sys.escrow, 'withdraw', [provider.address]), 'NothingPending');
  await reverts(send(r, sys.escrow, 'requestWithdrawal', [provider.address, 101n * TOKEN]), 'InsufficientDeposit');
  await send(r, sys.escrow, 'requestWithdrawal', [provider.address, 100n * TOKEN]);
  await reverts(send(r, sys.escrow, 'withdraw', [provider.address]), 'TooEarly');
  await reverts(send(r, sys.escrow, 'withdraw', [other.address]), 'NothingPending'); // per channel
  const v = { robot: r.address, provider: provider.address, session: 1n, cumulative: 40n * TOKEN };
  await send(provider, sys.escrow, 'redeem', [v, await signVoucher(r, sys.escrow, v)]);
  await increaseTime(DEFAULT_PARAMS.withdrawalDelay - 10n);
  await reverts(send(r, sys.escrow, 'withdraw', [provider.address]), 'TooEarly');
  await increaseTime(10n);
  const b0 = await bal(r);
  await send(r, sys.escrow, 'withdraw', [provider.address]);
  assert.equal((await bal(r)) - b0, 60n * TOKEN); // what was left of the 100 requested
  assert.equal(await deposit(r, provider), 0n);
  assert.equal(await deposit(r, other), 7n * TOKEN, 'the other channel is untouched');
  await reverts(send(r, sys.escrow, 'withdraw', [provider.address]), 'NothingPending');
});

test('covered is false while a withdrawal is pending, and true again once it lapses', async () => {
  const r = accounts[6]; // funded with ETH: it sends the request itself
  await depositFor(sys, other, r, provider, 10n * TOKEN);
  const v = { robot: r.address, provider: provider.address, session: 1n, cumulative: 6n * TOKEN };
  assert.deepEqual(await read(sys.escrow, 'redeemable', [v]), [6n * TOKEN, true]);
  await send(r, sys.escrow, 'requestWithdrawal', [provider.address, 5n * TOKEN]);
  assert.equal(await read(sys.escrow, 'pendingWithdrawal', [r.address, provider.address]), 5n * TOKEN);
  assert.deepEqual(await read(sys.escrow, 'redeemable', [v]), [6n * TOKEN, false], '6 > 10 - 5 pending');
  assert.deepEqual(await read(sys.escrow, 'redeemable', [{ ...v, cumulative: 5n * TOKEN }]), [5n * TOKEN, true]);
  await increaseTime(DEFAULT_PARAMS.withdrawalDelay);
  assert.deepEqual(await read(sys.escrow, 'redeemable', [v]), [6n * TOKEN, false], 'still pending once matured');
  await increaseTime(DEFAULT_PARAMS.withdrawalDelay);
  assert.equal(await read(sys.escrow, 'pendingWithdrawal', [r.address, provider.address]), 0n);
  assert.deepEqual(await read(sys.escrow, 'redeemable', [v]), [6n * TOKEN, true], 'a lapsed request no longer counts');
});

test('a matured withdrawal request lapses after its window; a new one needs a new delay', async () => {
  const r = accounts[5];
  await depositFor(sys, r, r, provider, 20n * TOKEN);
  await send(r, sys.escrow, 'requestWithdrawal', [provider.address, 20n * TOKEN]);
  await increaseTime(DEFAULT_PARAMS.withdrawalDelay); // matured
  await increaseTime(DEFAULT_PARAMS.withdrawalDelay - 5n); // still in the window
  await increaseTime(5n); // the window is over
  await reverts(send(r, sys.escrow, 'withdraw', [provider.address]), 'Lapsed');
  assert.equal(await deposit(r, provider), 20n * TOKEN);
  await send(r, sys.escrow, 'requestWithdrawal', [provider.address, 20n * TOKEN]);
  await reverts(send(r, sys.escrow, 'withdraw', [provider.address]), 'TooEarly');
  await increaseTime(DEFAULT_PARAMS.withdrawalDelay);
  const b0 = await bal(r);
  await send(r, sys.escrow, 'withdraw', [provider.address]);
  assert.equal((await bal(r)) - b0, 20n * TOKEN);
});

test("a reused session id pays only beyond the old session's cumulative (clients pick fresh ids)", async () => {
  const r = randomAccount();
  await depositFor(sys, accounts[1], r.address, provider, 100n * TOKEN);
  const v = { robot: r.address, provider: provider.address, session: 77n, cumulative: 30n * TOKEN };
  await send(provider, sys.escrow, 'redeem', [v, await signVoucher(r, sys.escrow, v)]);
  assert.equal(await deposit(r.address), 70n * TOKEN);
  // A "new" session under the same id, counting from zero again: pays nothing until it passes 30.
  const again = { ...v, cumulative: 20n * TOKEN };
  await send(provider, sys.escrow, 'redeem', [again, await signVoucher(r, sys.escrow, again)]);
  assert.equal(await deposit(r.address), 70n * TOKEN);
  const more = { ...v, cumulative: 35n * TOKEN };
  await send(provider, sys.escrow, 'redeem', [more, await signVoucher(r, sys.escrow, more)]);
  assert.equal(await deposit(r.address), 65n * TOKEN, 'only 35 − 30 is paid');
  // A fresh session id starts from zero.
  const fresh = { ...v, session: 78n, cumulative: 20n * TOKEN };
  await send(provider, sys.escrow, 'redeem', [fresh, await signVoucher(r, sys.escrow, fresh)]);
  assert.equal(await deposit(r.address), 45n * TOKEN);
});
