// Bindings, stakes with their unbonding delay, and slashing by a quorum of checkers after the
// challenge window.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import {
  accounts, deployAll, read, send, reverts, bind, nodeKey, verifyNodeSignature, stakeAs, slashSignatures, FAR_DEADLINE, signSlash,
  increaseTime, ROLE, TOKEN, DEFAULT_PARAMS, parseEventLogs, viem,
} from './lib.mjs';

let sys;
const provider = accounts[1];
const checkers = [accounts[2], accounts[3], accounts[4]];
const outsider = accounts[5];
const bal = (a) => read(sys.token, 'balanceOf', [a.address ?? a]);
const stakeOf = async (a) => {
  const [role, unbondAt, active, unbonding] = await read(sys.registry, 'stakes', [a.address]);
  return { role, unbondAt, active, unbonding };
};

before(async () => {
  sys = await deployAll();
  await bind(sys, provider);
  await stakeAs(sys, provider, ROLE.Provider, 1000n * TOKEN);
  for (const c of checkers) {
    await bind(sys, c);
    await stakeAs(sys, c, ROLE.Checker, 100n * TOKEN);
  }
});

test('a binding is checked on chain (EIP-712 pay key) and its Ed25519 half is in the event', async () => {
  const who = accounts[6];
  const node = nodeKey();
  const { receipt, nodeSignature } = await bind(sys, who, node);
  assert.equal(await read(sys.registry, 'nodeOf', [who.address]), node.id);
  const [ev] = parseEventLogs({ abi: sys.registry.abi, logs: receipt.logs, eventName: 'Bound' });
  assert.equal(ev.args.node, node.id);
  assert.equal(ev.args.nodeSignature, nodeSignature);
  assert.ok(verifyNodeSignature(ev.args.node, ev.args.account, ev.args.nodeSignature), 'Ed25519 signature checks off chain');
  assert.ok(!verifyNodeSignature(ev.args.node, outsider.address, ev.args.nodeSignature), 'and not for another address');
  // An address binds once.
  await reverts(bind(sys, who), 'AlreadyBound');
  // The zero node id is refused.
  await reverts(bind(sys, accounts[7], { id: `0x${'00'.repeat(32)}`, sign: node.sign }), 'ZeroNode');
  // Staking needs a binding.
  await reverts(stakeAs(sys, accounts[8], ROLE.Provider, 1n), 'NotBound');
});

test("a squatter's binding of someone else's node does not stop the real owner from binding", async () => {
  const owner = accounts[12];
  const squatter = accounts[13];
  const node = nodeKey();
  // The squatter binds the victim's node id with its own pay key, and junk (or a replayed)
  // Ed25519 signature: the contract cannot tell.
  const payKeySignature = await squatter.signTypedData({ domain: { name: 'Ganglion', version: '1', chainId: 31337, verifyingContract: sys.escrow.address }, types: { PayKeyBinding: [{ name: 'node', type: 'bytes32' }] }, primaryType: 'PayKeyBinding', message: { node: node.id } });
  const junk = `0x${'11'.repeat(64)}`;
  const r1 = await send(squatter, sys.registry, 'bind', [node.id, payKeySignature, junk]);
  assert.equal(await read(sys.registry, 'nodeOf', [squatter.address]), node.id);
  // The real owner still binds the same node.
  const { receipt } = await bind(sys, owner, node);
  assert.equal(await read(sys.registry, 'nodeOf', [owner.address]), node.id);
  // Off chain, of the two Bound events for the node, only the owner's Ed25519 signature verifies.
  const events = [r1, receipt].flatMap((rc) => parseEventLogs({ abi: sys.registry.abi, logs: rc.logs, eventName: 'Bound' }));
  const valid = events.filter((e) => e.args.node === node.id && verifyNodeSignature(e.args.node, e.args.account, e.args.nodeSignature));
  assert.deepEqual(valid.map((e) => e.args.account), [owner.address]);
});

test('stake unbonds only after the delay, one role per address', async () => {
  const who = accounts[9];
  await bind(sys, who);
  await stakeAs(sys, who, ROLE.Provider, 200n * TOKEN);
  assert.equal(await read(sys.registry, 'isStakedProvider', [who.address]), true);
  await reverts(stakeAs(sys, who, ROLE.Checker, 1n), 'WrongRole');
  await send(who, sys.registry, 'requestUnbond', [150n * TOKEN]);
  assert.equal(await read(sys.registry, 'isStakedProvider', [who.address]), false); // 50 < 100 minimum
  await reverts(send(who, sys.registry, 'withdrawUnbonded'), 'TooEarly');
  await increaseTime(DEFAULT_PARAMS.unbondingDelay);
  const b0 = await bal(who);
  await send(who, sys.registry, 'withdrawUnbonded');
  assert.equal((await bal(who)) - b0, 150n * TOKEN);
});

test('only the Slashing contract may slash; setSlashing happens once', async () => {
  await reverts(send(outsider, sys.registry, 'slash', [provider.address, 1000n]), 'NotSlashing');
  await reverts(send(sys.deployer, sys.registry, 'slash', [provider.address, 1000n]), 'NotSlashing');
  await reverts(send(sys.deployer, sys.registry, 'setSlashing', [outsider.address]), 'SlashingAlreadySet');
  await reverts(send(outsider, sys.registry, 'setSlashing', [outsider.address]), 'NotDeployer');
});

const evidence = (tag) => viem.keccak256(viem.toHex(`evidence file ${tag}`));

test('slashing is refused without quorum, with repeated or unstaked signers, or a too large fraction', async () => {
  const s = { provider: provider.address, evidenceHash: evidence('a'), fraction: 500n, deadline: FAR_DEADLINE };
  const sigs = await slashSignatures(sys, checkers, s);
  await reverts(send(outsider, sys.slashing, 'propose', [s.provider, s.evidenceHash, s.fraction, s.deadline, [sigs[0]]]), 'NoQuorum');
  await reverts(send(outsider, sys.slashing, 'propose', [s.provider, s.evidenceHash, s.fraction, s.deadline, [sigs[0], sigs[0]]]), 'SignersNotIncreasing');
  await reverts(send(outsider, sys.slashing, 'propose', [s.provider, s.evidenceHash, s.fraction, s.deadline, [sigs[1], sigs[0]]]), 'SignersNotIncreasing');
  // An unstaked signer (bound or not) does not count.
  const [bad] = await slashSignatures(sys, [outsider], s);
  const mixed = [[sigs[0], checkers[0]], [bad, outsider]].sort((x, y) => (BigInt(x[1].address) < BigInt(y[1].address) ? -1 : 1)).map((x) => x[0]);
  await reverts(send(outsider, sys.slashing, 'propose', [s.provider, s.evidenceHash, s.fraction, s.deadline, mixed]), 'NotStakedChecker');
  // Signatures over another fraction or evidence do not match.
  await reverts(send(outsider, sys.slashing, 'propose', [s.provider, s.evidenceHash, 400n, s.deadline, sigs]), 'NotStakedChecker');
  const big = { ...s, fraction: DEFAULT_PARAMS.slashFraction + 1n };
  await reverts(send(outsider, sys.slashing, 'propose', [big.provider, big.evidenceHash, big.fraction, big.deadline, await slashSignatures(sys, checkers, big)]), 'BadFraction');
  // A checker cannot be "slashed" as a provider.
  const notProv = { ...s, provider: checkers[0].address };
  await reverts(send(outsider, sys.slashing, 'propose', [notProv.provider, notProv.evidenceHash, notProv.fraction, notProv.deadline, await slashSignatures(sys, checkers, notProv)]), 'NotProvider');
});

test('a slash executes only after the challenge window and before it expires; the evidence hash is on chain', async () => {
  const s = { provider: provider.address, evidenceHash: evidence('b'), fraction: DEFAULT_PARAMS.slashFraction, deadline: FAR_DEADLINE };
  const sigs = await slashSignatures(sys, checkers.slice(0, 2), s);
  const r = await send(outsider, sys.slashing, 'propose', [s.provider, s.evidenceHash, s.fraction, s.deadline, sigs]);
  const [ev] = parseEventLogs({ abi: sys.slashing.abi, logs: r.logs, eventName: 'SlashProposed' });
  const id = ev.args.id;
  const p = await read(sys.slashing, 'getProposal', [id]);
  assert.equal(p.evidenceHash, s.evidenceHash);
  assert.equal(p.signers.length, 2);
  await reverts(send(outsider, sys.slashing, 'propose', [s.provider, s.evidenceHash, s.fraction, s.deadline, sigs]), 'AlreadyProposed');
  await reverts(send(outsider, sys.slashing, 'execute', [id]), 'InChallengeWindow');
  await reverts(send(outsider, sys.slashing, 'cancel', [id]), 'NotGovernance');
  await increaseTime(DEFAULT_PARAMS.challengeWindow - 5n);
  await reverts(send(outsider, sys.slashing, 'execute', [id]), 'InChallengeWindow');
  await increaseTime(5n);
  const before = await stakeOf(provider);
  const t0 = await bal(sys.treasury);
  await send(outsider, sys.slashing, 'execute', [id]);
  const after = await stakeOf(provider);
  const taken = (before.active * DEFAULT_PARAMS.slashFraction) / 10_000n;
  assert.equal(before.active - after.active, taken);
  assert.equal((await bal(sys.treasury)) - t0, taken);
  await reverts(send(outsider, sys.slashing, 'execute', [id]), 'NotPending');

  // Another one left past its execution window expires.
  const s2 = { ...s, evidenceHash: evidence('c') };
  const r2 = await send(outsider, sys.slashing, 'propose', [s2.provider, s2.evidenceHash, s2.fraction, s2.deadline, await slashSignatures(sys, checkers, s2)]);
  const [ev2] = parseEventLogs({ abi: sys.slashing.abi, logs: r2.logs, eventName: 'SlashProposed' });
  await increaseTime(DEFAULT_PARAMS.challengeWindow + DEFAULT_PARAMS.executionWindow);
  await reverts(send(outsider, sys.slashing, 'execute', [ev2.args.id]), 'Expired');
  assert.equal((await stakeOf(provider)).active, after.active);
});

test('a slash whose signers unbonded meanwhile lacks quorum at execution', async () => {
  const s = { provider: provider.address, evidenceHash: evidence('d'), fraction: 100n, deadline: FAR_DEADLINE };
  const two = checkers.slice(1, 3);
  const r = await send(outsider, sys.slashing, 'propose', [s.provider, s.evidenceHash, s.fraction, s.deadline, await slashSignatures(sys, two, s)]);
  const [ev] = parseEventLogs({ abi: sys.slashing.abi, logs: r.logs, eventName: 'SlashProposed' });
  await send(two[0], sys.registry, 'requestUnbond', [100n * TOKEN]);
  await increaseTime(DEFAULT_PARAMS.challengeWindow);
  await reverts(send(outsider, sys.slashing, 'execute', [ev.args.id]), 'NoQuorum');
});

test('unbonding stake can still be slashed', async () => {
  const p = accounts[10];
  await bind(sys, p);
  await stakeAs(sys, p, ROLE.Provider, 100n * TOKEN);
  await send(p, sys.registry, 'requestUnbond', [100n * TOKEN]);
  const c = accounts[11];
  await bind(sys, c);
  await stakeAs(sys, c, ROLE.Checker, 100n * TOKEN);
  const s = { provider: p.address, evidenceHash: evidence('e'), fraction: 1000n, deadline: FAR_DEADLINE };
  const live = [checkers[0], c];
  const r = await send(outsider, sys.slashing, 'propose', [s.provider, s.evidenceHash, s.fraction, s.deadline, await slashSignatures(sys, live, s)]);
  const [ev] = parseEventLogs({ abi: sys.slashing.abi, logs: r.logs, eventName: 'SlashProposed' });
  await increaseTime(DEFAULT_PARAMS.challengeWindow);
  await send(outsider, sys.slashing, 'execute', [ev.args.id]);
  assert.equal((await stakeOf(p)).unbonding, 90n * TOKEN);
});
