// Token conservation over a seeded random sequence of deposits, redemptions (single, batched,
// replayed, uncovered), withdrawals, stakes, unbondings and slashes: the sum of every holder's
// balance (accounts, Escrow, Registry, treasury) stays the total supply, the Escrow holds exactly
// its channels' balances (robot → provider) and the Registry exactly its stakes. An uncovered
// voucher is refused by `redeem` and skipped (not booked) by `redeemBatch`.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import {
  accounts, deployAll, read, send, reverts, bind, stakeAs, depositFor, signVoucher, slashSignatures, FAR_DEADLINE, increaseTime, pub, ROLE, TOKEN,
  DEFAULT_PARAMS, viem,
} from './lib.mjs';

const SEED = Number(process.env.CONSERVATION_SEED || 20260101);
const STEPS = Number(process.env.CONSERVATION_STEPS || 200);

function mulberry32(a) {
  return () => {
    a |= 0; a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

let sys;
const robots = accounts.slice(1, 5);
const providers = accounts.slice(5, 8);
const checkers = accounts.slice(8, 11);
const bystanders = accounts.slice(11, 19);

before(async () => {
  sys = await deployAll();
  for (const p of providers) { await bind(sys, p); await stakeAs(sys, p, ROLE.Provider, 1000n * TOKEN); }
  for (const c of checkers) { await bind(sys, c); await stakeAs(sys, c, ROLE.Checker, 100n * TOKEN); }
});

test(`token conservation over ${STEPS} random steps (seed ${SEED})`, { timeout: 600_000 }, async () => {
  const rand = mulberry32(SEED);
  const pick = (xs) => xs[Math.floor(rand() * xs.length)];
  const amount = (max) => BigInt(Math.floor(rand() * Number(max)) + 1) * (TOKEN / 100n); // 0.01 .. max/100 tokens
  const supply = await read(sys.token, 'totalSupply');
  const holders = [...accounts.map((a) => a.address), sys.escrow.address, sys.registry.address, sys.slashing.address, sys.timelock.address, sys.governor.address];
  const cumulative = new Map(); // robot|provider|session -> cumulative signed so far
  const last = new Map(); // same key -> [voucher, signature]
  const counts = {};
  let evidenceN = 0;

  const voucherFor = async (robot, provider, session, increase) => {
    const key = `${robot.address}|${provider.address}|${session}`;
    const c = (cumulative.get(key) ?? 0n) + increase;
    const v = { robot: robot.address, provider: provider.address, session, cumulative: c };
    const sig = await signVoucher(robot, sys.escrow, v);
    return { key, v, sig, c };
  };
  const channelOf = async (r, p) => (await read(sys.escrow, 'channels', [r.address ?? r, p.address ?? p]))[0];

  async function check(step, op) {
    const bals = await Promise.all(holders.map((h) => read(sys.token, 'balanceOf', [h])));
    const sum = bals.reduce((a, b) => a + b, 0n);
    assert.equal(sum, supply, `step ${step} (${op}): sum of balances ${sum} != supply ${supply}`);
    const deposits = (await Promise.all(robots.flatMap((r) => providers.map((p) => channelOf(r, p))))).reduce((a, x) => a + x, 0n);
    assert.equal(await read(sys.token, 'balanceOf', [sys.escrow.address]), deposits, `step ${step} (${op}): escrow holds its deposits`);
    const stakes = (await Promise.all(accounts.map((a) => read(sys.registry, 'stakes', [a.address])))).reduce((a, x) => a + x[2] + x[3], 0n);
    assert.equal(await read(sys.token, 'balanceOf', [sys.registry.address]), stakes, `step ${step} (${op}): registry holds its stakes`);
  }

  for (let step = 0; step < STEPS; step++) {
    const r = rand();
    let op;
    if (r < 0.2) {
      op = 'deposit';
      const robot = pick(robots);
      await depositFor(sys, robot, robot, pick(providers), amount(5000));
    } else if (r < 0.45) {
      op = 'redeem';
      const robot = pick(robots);
      const provider = pick(providers);
      const { key, v, sig, c } = await voucherFor(robot, provider, BigInt(Math.floor(rand() * 3)), amount(4000));
      const covered = c - (cumulative.get(key) ?? 0n) <= (await channelOf(robot, provider));
      try {
        await send(pick(accounts), sys.escrow, 'redeem', [v, sig]);
        assert.ok(covered, 'an uncovered voucher was redeemed');
        cumulative.set(key, c);
        last.set(key, [v, sig]);
      } catch (e) {
        if (covered || !String(e.message).includes('InsufficientDeposit(')) throw e;
        op = 'redeem-refused';
      }
    } else if (r < 0.55) {
      op = 'replay';
      if (last.size === 0) continue;
      const [v, sig] = pick([...last.values()]);
      const before = await channelOf(v.robot, v.provider);
      await send(pick(accounts), sys.escrow, 'redeem', [v, sig]);
      assert.equal(await channelOf(v.robot, v.provider), before, 'a replay paid');
    } else if (r < 0.65) {
      op = 'batch';
      const n = 2 + Math.floor(rand() * 3);
      const vs = []; const sigs = []; const keys = [];
      const seen = new Set();
      for (let i = 0; i < n; i++) {
        const robot = pick(robots);
        const x = await voucherFor(robot, pick(providers), BigInt(3 + Math.floor(rand() * 3)), amount(1000));
        if (seen.has(x.key)) continue;
        seen.add(x.key);
        vs.push(x.v); sigs.push(x.sig); keys.push([x.key, x.c, x.v, x.sig]);
      }
      // Which vouchers the batch pays: in order, each from what its channel has left.
      const left = new Map();
      const paidKeys = [];
      for (const [key, c, v] of keys) {
        const ch = `${v.robot}|${v.provider}`;
        if (!left.has(ch)) left.set(ch, await channelOf(v.robot, v.provider));
        const inc = c - (cumulative.get(key) ?? 0n);
        if (inc <= left.get(ch)) { left.set(ch, left.get(ch) - inc); paidKeys.push(key); }
      }
      const rc = await send(pick(accounts), sys.escrow, 'redeemBatch', [vs, sigs]);
      const skipped = viem.parseEventLogs({ abi: sys.escrow.abi, logs: rc.logs, eventName: 'Skipped' });
      assert.equal(skipped.length, keys.length - paidKeys.length, 'the uncovered vouchers are skipped');
      for (const [key, c, v, sig] of keys) if (paidKeys.includes(key)) { cumulative.set(key, c); last.set(key, [v, sig]); }
      for (const [ch, l] of left) { const [ra, pa] = ch.split('|'); assert.equal(await channelOf(ra, pa), l, 'a channel after the batch'); }
      if (skipped.length > 0) op = 'batch-skipped';
    } else if (r < 0.73) {
      op = 'request-withdrawal';
      const robot = pick(robots);
      const provider = pick(providers);
      const d = await channelOf(robot, provider);
      if (d === 0n) continue;
      await send(robot, sys.escrow, 'requestWithdrawal', [provider.address, d / 2n + 1n]);
    } else if (r < 0.8) {
      op = 'withdraw';
      const robot = pick(robots);
      const provider = pick(providers);
      const [, pending, withdrawAt, lapseAt] = await read(sys.escrow, 'channels', [robot.address, provider.address]);
      if (pending === 0n) continue;
      const now = BigInt((await pub.getBlock()).timestamp);
      if (now >= lapseAt) {
        op = 'withdraw-lapsed';
        await reverts(send(robot, sys.escrow, 'withdraw', [provider.address]), 'Lapsed');
      } else {
        if (now < withdrawAt) await increaseTime(withdrawAt - now);
        await send(robot, sys.escrow, 'withdraw', [provider.address]);
      }
    } else if (r < 0.87) {
      op = 'slash';
      const provider = pick(providers);
      const s = { provider: provider.address, evidenceHash: viem.keccak256(viem.toHex(`evidence ${SEED} ${evidenceN++}`)), fraction: BigInt(1 + Math.floor(rand() * Number(DEFAULT_PARAMS.slashFraction))), deadline: FAR_DEADLINE };
      const signers = [...checkers].sort(() => rand() - 0.5).slice(0, 2);
      const rc = await send(pick(accounts), sys.slashing, 'propose', [s.provider, s.evidenceHash, s.fraction, s.deadline, await slashSignatures(sys, signers, s)]);
      const [ev] = viem.parseEventLogs({ abi: sys.slashing.abi, logs: rc.logs, eventName: 'SlashProposed' });
      await increaseTime(DEFAULT_PARAMS.challengeWindow);
      await send(pick(accounts), sys.slashing, 'execute', [ev.args.id]);
    } else if (r < 0.93) {
      const p = pick(providers);
      const [, unbondAt, active, unbonding] = await read(sys.registry, 'stakes', [p.address]);
      if (unbonding > 0n) {
        op = 'withdraw-unbonded';
        await increaseTime(DEFAULT_PARAMS.unbondingDelay);
        await send(p, sys.registry, 'withdrawUnbonded');
      } else if (active > 200n * TOKEN && rand() < 0.5) {
        op = 'unbond';
        await send(p, sys.registry, 'requestUnbond', [active / 4n]);
      } else {
        op = 'stake';
        await stakeAs(sys, p, ROLE.Provider, amount(10000));
      }
      void unbondAt;
    } else {
      op = 'transfer';
      await send(pick(bystanders), sys.token, 'transfer', [pick(accounts).address, amount(1000)]);
    }
    counts[op] = (counts[op] ?? 0) + 1;
    await check(step, op);
  }
  console.log(`conservation: ${STEPS} steps, seed ${SEED}: ${JSON.stringify(counts)}`);
});
