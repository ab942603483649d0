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
  // The slashing model: every proposal made, what each evidence took (bps), the largest
  // fraction proposed per evidence, each provider's cap window, and the freeze counters.
  const proposals = [];
  const taken = new Map(); // provider|evidenceHash -> bps taken
  const maxFraction = new Map(); // provider|evidenceHash -> largest fraction proposed
  const capWin = new Map(); // provider -> { end, used }
  const pendingCount = new Map(); // provider -> proposals not executed (expired ones included)
  const latestExpiry = new Map(); // provider -> latest expiresAt

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

  // The next transaction's block time is within a few seconds of the latest block's, so the model
  // can tell which side of a time boundary it falls on unless the boundary is just ahead: then
  // move the clock past it first. Returns the latest block time.
  async function clearOf(bounds) {
    let now = BigInt((await pub.getBlock()).timestamp);
    while (bounds.some((b) => now < b && b <= now + 3n)) {
      await increaseTime(4n);
      now = BigInt((await pub.getBlock()).timestamp);
    }
    return now;
  }

  // One slash proposal against `provider`: new evidence, or evidence already proposed with
  // another fraction (a front-run or a top-up), a replay of an existing proposal, or signatures
  // past their deadline. The model predicts which the contract refuses, and why.
  async function proposeOne(provider) {
    const mine = proposals.filter((x) => x.provider === provider.address);
    const now = BigInt((await pub.getBlock()).timestamp);
    let s;
    const roll = rand();
    if (roll < 0.1 && mine.length) {
      const x = pick(mine);
      s = { provider: x.provider, evidenceHash: x.evidenceHash, fraction: x.fraction, deadline: FAR_DEADLINE };
    } else {
      const reuse = roll < 0.45 && mine.length;
      s = {
        provider: provider.address,
        evidenceHash: reuse ? pick(mine).evidenceHash : viem.keccak256(viem.toHex(`evidence ${SEED} ${evidenceN++}`)),
        fraction: BigInt(1 + Math.floor(rand() * Number(DEFAULT_PARAMS.slashFraction))),
        deadline: rand() < 0.1 ? now - 10n : now + 3600n,
      };
    }
    const ek = `${s.provider}|${s.evidenceHash}`;
    const expect = s.deadline < now ? 'SignatureExpired'
      : proposals.some((x) => x.provider === s.provider && x.evidenceHash === s.evidenceHash && x.fraction === s.fraction) ? 'AlreadyProposed'
        : s.fraction <= (taken.get(ek) ?? 0n) ? 'NothingToSlash' : null;
    const signers = [...checkers].sort(() => rand() - 0.5).slice(0, 2);
    const args = [s.provider, s.evidenceHash, s.fraction, s.deadline, await slashSignatures(sys, signers, s)];
    if (expect) {
      await reverts(send(pick(accounts), sys.slashing, 'propose', args), expect);
      return `slash-propose-refused-${expect}`;
    } else {
      const rc = await send(pick(accounts), sys.slashing, 'propose', args);
      const [ev] = viem.parseEventLogs({ abi: sys.slashing.abi, logs: rc.logs, eventName: 'SlashProposed' });
      proposals.push({ ...s, id: ev.args.id, executeAfter: ev.args.executeAfter, expiresAt: ev.args.expiresAt, status: 'pending' });
      pendingCount.set(s.provider, (pendingCount.get(s.provider) ?? 0) + 1);
      if (ev.args.expiresAt > (latestExpiry.get(s.provider) ?? 0n)) latestExpiry.set(s.provider, ev.args.expiresAt);
      if (!maxFraction.has(ek) || maxFraction.get(ek) < s.fraction) maxFraction.set(ek, s.fraction);
    }
    return 'slash-propose';
  }

  // Executes the pending proposal `x` (its challenge window over): it takes its fraction less
  // what its evidence took, capped by what is left of the provider's cap window; or it is refused
  // (expired, or the cap spent).
  async function executeOne(x) {
    let op = 'slash-execute';
    const ek = `${x.provider}|${x.evidenceHash}`;
    const capLeft = (w, t) => (t >= w.end ? DEFAULT_PARAMS.slashFraction : DEFAULT_PARAMS.slashFraction - w.used);
    const w = capWin.get(x.provider) ?? { end: 0n, used: 0n };
    const now = await clearOf([x.expiresAt, w.end]);
    const want = x.fraction - (taken.get(ek) ?? 0n);
    if (now >= x.expiresAt) {
      op = 'slash-expired';
      await reverts(send(pick(accounts), sys.slashing, 'execute', [x.id]), 'Expired');
      x.status = 'expired';
    } else if (want > 0n && capLeft(w, now) === 0n) {
      op = 'slash-cap-reached';
      await reverts(send(pick(accounts), sys.slashing, 'execute', [x.id]), 'SlashCapReached');
    } else {
      const [, , a0, u0] = await read(sys.registry, 'stakes', [x.provider]);
      const rc = await send(pick(accounts), sys.slashing, 'execute', [x.id]);
      const t = (await pub.getBlock({ blockNumber: rc.blockNumber })).timestamp;
      const slashed = viem.parseEventLogs({ abi: sys.registry.abi, logs: rc.logs, eventName: 'Slashed' });
      x.status = 'executed';
      pendingCount.set(x.provider, pendingCount.get(x.provider) - 1);
      if (want <= 0n) {
        assert.equal(slashed.length, 0, 'an evidence that took its fraction takes nothing more');
        op = 'slash-execute-nothing';
      } else {
        const cur = t >= w.end ? { end: t + DEFAULT_PARAMS.challengeWindow, used: 0n } : w;
        const left = DEFAULT_PARAMS.slashFraction - cur.used;
        const take = want < left ? want : left;
        assert.equal(slashed.length, 1);
        assert.equal(slashed[0].args.fraction, take, 'the slash takes min(want, what is left of the cap)');
        assert.equal(slashed[0].args.amount, ((a0 + u0) * take) / 10_000n);
        if (take < want) op = 'slash-execute-capped';
        capWin.set(x.provider, { end: cur.end, used: cur.used + take });
        taken.set(ek, (taken.get(ek) ?? 0n) + take);
      }
    }
    return op;
  }

  // The slashing rules hold: each evidence took at most its largest fraction, each cap window at
  // most slashFraction, and the contract agrees with the model.
  async function checkSlashing() {
    for (const [k, v] of taken) {
      const [pa, eh] = k.split('|');
      assert.equal(await read(sys.slashing, 'evidenceSlashed', [pa, eh]), v);
      assert.ok(v <= maxFraction.get(k) && v <= DEFAULT_PARAMS.slashFraction, 'an evidence took more than its fraction');
    }
    for (const [pa, m] of capWin) {
      const [end, used] = await read(sys.slashing, 'capWindows', [pa]);
      assert.deepEqual([end, used], [m.end, m.used]);
      assert.ok(used <= DEFAULT_PARAMS.slashFraction, 'a cap window took more than slashFraction');
    }
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
    } else if (r < 0.77) {
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
    } else if (r < 0.83) {
      // One to three proposals at once (parallel slashes of one provider, or of several).
      op = 'slash-proposals';
      const n = 1 + Math.floor(rand() * 3);
      // Often one with stake unbonding, whose withdrawal the proposal then freezes.
      const unbonding = [];
      for (const p of providers) if ((await read(sys.registry, 'stakes', [p.address]))[3] > 0n) unbonding.push(p);
      const provider = unbonding.length && rand() < 0.6 ? pick(unbonding) : pick(providers);
      for (let k = 0; k < n; k++) {
        const label = await proposeOne(rand() < 0.7 ? provider : pick(providers));
        counts[label] = (counts[label] ?? 0) + 1;
      }
    } else if (r < 0.88) {
      // Wait out a pending proposal's challenge window, then execute it and every other pending
      // one that may execute by then, in random order.
      op = 'slash-executions';
      const open = proposals.filter((x) => x.status === 'pending');
      if (open.length === 0) continue;
      const first = pick(open);
      const now = BigInt((await pub.getBlock()).timestamp);
      if (now < first.executeAfter) await increaseTime(first.executeAfter - now);
      const t = BigInt((await pub.getBlock()).timestamp);
      const ready = open.filter((x) => x.executeAfter <= t).sort(() => rand() - 0.5);
      for (const x of ready) {
        const label = await executeOne(x);
        counts[label] = (counts[label] ?? 0) + 1;
      }
      await checkSlashing();
    } else if (r < 0.94) {
      const p = pick(providers);
      const [, unbondAt, active, unbonding] = await read(sys.registry, 'stakes', [p.address]);
      if (unbonding > 0n) {
        // Withdraw once the unbonding has matured, unless a pending slash freezes it.
        op = 'withdraw-unbonded';
        const t0 = BigInt((await pub.getBlock()).timestamp);
        if (t0 < unbondAt) await increaseTime(unbondAt - t0);
        const now = await clearOf([unbondAt, latestExpiry.get(p.address) ?? 0n, ...proposals.filter((x) => x.provider === p.address).map((x) => x.expiresAt)]);
        const frozen = (pendingCount.get(p.address) ?? 0) > 0 && now < (latestExpiry.get(p.address) ?? 0n);
        const live = proposals.some((x) => x.provider === p.address && x.status === 'pending' && now < x.expiresAt);
        assert.ok(!live || frozen, 'a live slash proposal must freeze the stake');
        if (frozen) {
          await reverts(send(p, sys.registry, 'withdrawUnbonded'), 'SlashPending');
          op = 'withdraw-unbonded-frozen';
        } else {
          await send(p, sys.registry, 'withdrawUnbonded');
        }
      } else if (active > 200n * TOKEN && rand() < 0.5) {
        op = 'unbond';
        await send(p, sys.registry, 'requestUnbond', [active / 4n]);
      } else {
        op = 'stake';
        await stakeAs(sys, p, ROLE.Provider, amount(10000));
      }
    } else {
      op = 'transfer';
      await send(pick(bystanders), sys.token, 'transfer', [pick(accounts).address, amount(1000)]);
    }
    counts[op] = (counts[op] ?? 0) + 1;
    await check(step, op);
  }
  console.log(`conservation: ${STEPS} steps, seed ${SEED}: ${JSON.stringify(counts)}`);
});
