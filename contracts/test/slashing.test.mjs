// The slashing rules the security review asked for: signatures with a deadline; a front-run
// with a tiny fraction cannot burn the evidence, and one evidence never takes more than the cap;
// parallel slashes of a provider take at most slashFraction per cap window; a pending slash
// freezes the provider's unbonded stake.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import {
  accounts, deployAll, read, send, reverts, bind, stakeAs, slashSignatures, proposeArgs, increaseTime, pub, ROLE, TOKEN,
  DEFAULT_PARAMS, FAR_DEADLINE, parseEventLogs, viem,
} from './lib.mjs';

let sys;
const checkers = [accounts[2], accounts[3], accounts[4]];
const sybils = [accounts[5], accounts[6]]; // staked checkers too: the contract cannot tell them apart
const outsider = accounts[7];
let nextProvider = 8;
let evidenceN = 0;
const evidence = () => viem.keccak256(viem.toHex(`slashing evidence ${evidenceN++}`));
const now = async () => BigInt((await pub.getBlock()).timestamp);
const stakeOf = async (a) => {
  const [role, unbondAt, active, unbonding] = await read(sys.registry, 'stakes', [a.address ?? a]);
  return { role, unbondAt, active, unbonding, total: active + unbonding };
};

/// A fresh provider staked with `amount`.
async function newProvider(amount = 1000n * TOKEN) {
  const p = accounts[nextProvider++];
  await bind(sys, p);
  await stakeAs(sys, p, ROLE.Provider, amount);
  return p;
}

/// Proposes `s` signed by `signers`; returns the proposal id.
async function propose(s, signers = checkers.slice(0, 2)) {
  const rc = await send(outsider, sys.slashing, 'propose', proposeArgs(s, await slashSignatures(sys, signers, s)));
  const [ev] = parseEventLogs({ abi: sys.slashing.abi, logs: rc.logs, eventName: 'SlashProposed' });
  return ev.args.id;
}

before(async () => {
  sys = await deployAll();
  for (const c of [...checkers, ...sybils]) {
    await bind(sys, c);
    await stakeAs(sys, c, ROLE.Checker, 100n * TOKEN);
  }
});

test('slash signatures carry a deadline and are refused after it', async () => {
  const p = await newProvider();
  const t = await now();
  const s = { provider: p.address, evidenceHash: evidence(), fraction: 500n, deadline: t + 100n };
  const sigs = await slashSignatures(sys, checkers.slice(0, 2), s);
  // The digest is over the deadline: the same signatures with another deadline recover others.
  await reverts(send(outsider, sys.slashing, 'propose', proposeArgs({ ...s, deadline: s.deadline + 1n }, sigs)), 'NotStakedChecker');
  assert.equal(
    await read(sys.slashing, 'slashDigest', [s.provider, s.evidenceHash, s.fraction, s.deadline]),
    viem.hashTypedData({
      domain: { name: 'Ganglion', version: '1', chainId: 31337, verifyingContract: sys.slashing.address },
      types: { Slash: [{ name: 'provider', type: 'address' }, { name: 'evidenceHash', type: 'bytes32' }, { name: 'fraction', type: 'uint256' }, { name: 'deadline', type: 'uint64' }] },
      primaryType: 'Slash',
      message: s,
    }),
  );
  await increaseTime(101n);
  assert.ok((await now()) > s.deadline);
  await reverts(send(outsider, sys.slashing, 'propose', proposeArgs(s, sigs)), 'SignatureExpired');
  // Re-signed with a later deadline it goes through.
  const s2 = { ...s, deadline: (await now()) + 60n };
  await send(outsider, sys.slashing, 'propose', proposeArgs(s2, await slashSignatures(sys, checkers.slice(0, 2), s2)));
});

test('a front-run with a tiny fraction cannot burn the evidence; one evidence takes at most its largest fraction', async () => {
  const p = await newProvider();
  const ev = evidence();
  // A quorum of sybil (but staked) checkers proposes the evidence first, with 0.01 %.
  const tiny = { provider: p.address, evidenceHash: ev, fraction: 1n, deadline: FAR_DEADLINE };
  const idTiny = await propose(tiny, sybils);
  // The real slash of the same evidence can still be proposed.
  const real = { ...tiny, fraction: 1000n };
  const idReal = await propose(real, checkers.slice(0, 2));
  assert.notEqual(idTiny, idReal);
  assert.equal(await read(sys.slashing, 'proposalId', [p.address, ev, 1000n]), idReal);
  // The same signatures replayed are the same proposal: refused.
  await reverts(propose(real, checkers.slice(0, 2)), 'AlreadyProposed');
  const idMid = await propose({ ...tiny, fraction: 500n }, checkers.slice(1, 3));
  await increaseTime(DEFAULT_PARAMS.challengeWindow);
  const s0 = (await stakeOf(p)).total;
  await send(outsider, sys.slashing, 'execute', [idTiny]);
  const s1 = (await stakeOf(p)).total;
  assert.equal(s0 - s1, (s0 * 1n) / 10_000n);
  // The real slash takes the rest of its fraction: 999 bps.
  await send(outsider, sys.slashing, 'execute', [idReal]);
  const s2 = (await stakeOf(p)).total;
  assert.equal(s1 - s2, (s1 * 999n) / 10_000n);
  assert.equal(await read(sys.slashing, 'evidenceSlashed', [p.address, ev]), 1000n);
  // The evidence has taken its largest fraction: the 5 % one executes and takes nothing.
  const rc = await send(outsider, sys.slashing, 'execute', [idMid]);
  const [done] = parseEventLogs({ abi: sys.slashing.abi, logs: rc.logs, eventName: 'SlashExecuted' });
  assert.equal(done.args.amount, 0n);
  assert.equal((await stakeOf(p)).total, s2);
  assert.equal(Number((await read(sys.slashing, 'getProposal', [idMid])).status), 2); // Executed
  // Nor can a new proposal for it at or below what it took.
  await reverts(propose({ ...tiny, fraction: 999n }, checkers.slice(0, 2)), 'NothingToSlash');
  await reverts(propose({ ...tiny, fraction: 1000n, deadline: FAR_DEADLINE - 1n }, checkers.slice(0, 2)), 'AlreadyProposed');
});

test('parallel slashes of one provider take at most slashFraction per cap window', async () => {
  const p = await newProvider();
  const e = [evidence(), evidence(), evidence()];
  const base = { provider: p.address, deadline: FAR_DEADLINE };
  const id1 = await propose({ ...base, evidenceHash: e[0], fraction: 600n });
  const id2 = await propose({ ...base, evidenceHash: e[1], fraction: 600n });
  const id3 = await propose({ ...base, evidenceHash: e[2], fraction: 1000n });
  await increaseTime(DEFAULT_PARAMS.challengeWindow);
  const s0 = (await stakeOf(p)).total;
  await send(outsider, sys.slashing, 'execute', [id1]);
  const t1 = await now();
  const s1 = (await stakeOf(p)).total;
  assert.equal(s0 - s1, (s0 * 600n) / 10_000n);
  // The second takes only what is left of the cap: 400 bps, not 600.
  await send(outsider, sys.slashing, 'execute', [id2]);
  const s2 = (await stakeOf(p)).total;
  assert.equal(s1 - s2, (s1 * 400n) / 10_000n);
  assert.equal(await read(sys.slashing, 'evidenceSlashed', [p.address, e[1]]), 400n);
  const [end, used] = await read(sys.slashing, 'capWindows', [p.address]);
  assert.equal(end, t1 + DEFAULT_PARAMS.challengeWindow);
  assert.equal(used, 1000n);
  // The third finds the cap spent: it stays pending (and expires unexecuted, the execution
  // window being shorter than the cap window).
  await reverts(send(outsider, sys.slashing, 'execute', [id3]), 'SlashCapReached');
  assert.equal((await stakeOf(p)).total, s2);
  assert.ok(s0 - s2 <= (s0 * DEFAULT_PARAMS.slashFraction) / 10_000n);
  await increaseTime(DEFAULT_PARAMS.executionWindow);
  await reverts(send(outsider, sys.slashing, 'execute', [id3]), 'Expired');
  // In a later window the cap is fresh: the second evidence is topped up (601 − 400 = 201 bps),
  // and another slash takes what is left of the new cap (799 of its 1000 bps).
  const id4 = await propose({ ...base, evidenceHash: e[1], fraction: 601n });
  // (The same provider, evidence and fraction is proposed once, ever, even if it expired.)
  await reverts(propose({ ...base, evidenceHash: e[2], fraction: 1000n }), 'AlreadyProposed');
  const id6 = await propose({ ...base, evidenceHash: e[2], fraction: 999n });
  await increaseTime(DEFAULT_PARAMS.challengeWindow);
  await send(outsider, sys.slashing, 'execute', [id4]);
  const s4 = (await stakeOf(p)).total;
  assert.equal(s2 - s4, (s2 * 201n) / 10_000n);
  await send(outsider, sys.slashing, 'execute', [id6]);
  const s6 = (await stakeOf(p)).total;
  assert.equal(s4 - s6, (s4 * 799n) / 10_000n);
  assert.equal((await read(sys.slashing, 'capWindows', [p.address]))[1], 1000n);
  assert.equal(await read(sys.slashing, 'evidenceSlashed', [p.address, e[2]]), 799n);
});

test("a pending slash freezes the provider's unbonded stake until it executes or expires", async () => {
  const p = await newProvider();
  await send(p, sys.registry, 'requestUnbond', [500n * TOKEN]);
  await increaseTime(DEFAULT_PARAMS.unbondingDelay); // the unbonding has matured
  assert.equal(await read(sys.slashing, 'frozenUntil', [p.address]), 0n);
  const id = await propose({ provider: p.address, evidenceHash: evidence(), fraction: 1000n, deadline: FAR_DEADLINE });
  const { expiresAt } = await read(sys.slashing, 'getProposal', [id]);
  assert.equal(await read(sys.slashing, 'frozenUntil', [p.address]), expiresAt);
  await reverts(send(p, sys.registry, 'withdrawUnbonded'), 'SlashPending');
  await increaseTime(DEFAULT_PARAMS.challengeWindow);
  await reverts(send(p, sys.registry, 'withdrawUnbonded'), 'SlashPending');
  await send(outsider, sys.slashing, 'execute', [id]);
  assert.equal(await read(sys.slashing, 'frozenUntil', [p.address]), 0n);
  // 10 % of 1,000 taken from the active 500 first; the 500 unbonding is withdrawable again.
  assert.equal((await stakeOf(p)).unbonding, 500n * TOKEN);
  await send(p, sys.registry, 'withdrawUnbonded');
  assert.equal((await stakeOf(p)).unbonding, 0n);

  // A proposal left to expire freezes only until its expiry.
  await send(p, sys.registry, 'requestUnbond', [100n * TOKEN]);
  await increaseTime(DEFAULT_PARAMS.unbondingDelay);
  const id2 = await propose({ provider: p.address, evidenceHash: evidence(), fraction: 500n, deadline: FAR_DEADLINE });
  await reverts(send(p, sys.registry, 'withdrawUnbonded'), 'SlashPending');
  const until = (await read(sys.slashing, 'getProposal', [id2])).expiresAt;
  await increaseTime(until - (await now()));
  assert.equal(await read(sys.slashing, 'frozenUntil', [p.address]), 0n);
  await send(p, sys.registry, 'withdrawUnbonded');
  // A checker's unbonded stake is never frozen by slashes (they target providers only).
  const c = checkers[2];
  await send(c, sys.registry, 'requestUnbond', [1n]);
  await increaseTime(DEFAULT_PARAMS.unbondingDelay);
  await send(c, sys.registry, 'withdrawUnbonded');
});
