// Parameters change through governance alone: propose, vote, queue, timelock, execute.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import {
  accounts, deployAll, read, send, reverts, bind, stakeAs, slashSignatures, FAR_DEADLINE, increaseTime, testClient, pub, ROLE, TOKEN,
  DEFAULT_PARAMS, GOV, parseEventLogs, viem,
} from './lib.mjs';

let sys;
const voters = [accounts[1], accounts[2], accounts[3]];
const outsider = accounts[5];
const SETTERS = [
  ['setMinProviderStake', 1n], ['setMinCheckerStake', 1n], ['setSlashFraction', 1n], ['setCheckerQuorum', 1n],
  ['setProtocolFee', 1n], ['setUnbondingDelay', 1n], ['setWithdrawalDelay', 1n], ['setChallengeWindow', 1n],
  ['setExecutionWindow', 1n],
];

before(async () => {
  sys = await deployAll();
  for (const v of voters) await send(v, sys.token, 'delegate', [v.address]);
});

test('governance is wired: Params owned by the timelock, the timelock administered by nobody', async () => {
  assert.equal(await read(sys.params, 'owner'), sys.timelock.address);
  const admin = await read(sys.timelock, 'DEFAULT_ADMIN_ROLE');
  const proposer = await read(sys.timelock, 'PROPOSER_ROLE');
  assert.equal(await read(sys.timelock, 'hasRole', [admin, sys.deployer.address]), false);
  assert.equal(await read(sys.timelock, 'hasRole', [proposer, sys.deployer.address]), false);
  assert.equal(await read(sys.timelock, 'hasRole', [proposer, sys.governor.address]), true);
  assert.equal(await read(sys.governor, 'timelock'), sys.timelock.address);
  assert.equal(await read(sys.governor, 'token'), sys.token.address);
});

test('a parameter change outside governance is refused', async () => {
  for (const who of [sys.deployer, outsider, voters[0]]) {
    for (const [fn, value] of SETTERS) {
      await reverts(send(who, sys.params, fn, [value]), 'OwnableUnauthorizedAccount');
    }
    await reverts(send(who, sys.params, 'setTreasury', [who.address]), 'OwnableUnauthorizedAccount');
    await reverts(send(who, sys.params, 'transferOwnership', [who.address]), 'OwnableUnauthorizedAccount');
  }
  // Nor can anyone schedule on the timelock directly.
  const data = viem.encodeFunctionData({ abi: sys.params.abi, functionName: 'setProtocolFee', args: [0n] });
  await reverts(send(outsider, sys.timelock, 'schedule', [sys.params.address, 0n, data, viem.zeroHash, viem.zeroHash, GOV.timelockDelay]), 'AccessControlUnauthorizedAccount');
  assert.equal(await read(sys.params, 'protocolFee'), DEFAULT_PARAMS.protocolFee);
});

test('a proposal, a vote and the timelock change every parameter, and can cancel a slash (the appeal)', async () => {
  // A pending slash to appeal.
  const provider = accounts[6];
  const checkers = [accounts[7], accounts[8]];
  await bind(sys, provider);
  await stakeAs(sys, provider, ROLE.Provider, 500n * TOKEN);
  for (const c of checkers) { await bind(sys, c); await stakeAs(sys, c, ROLE.Checker, 100n * TOKEN); }
  const s = { provider: provider.address, evidenceHash: viem.keccak256(viem.toHex('disputed')), fraction: 1000n, deadline: FAR_DEADLINE };
  const pr = await send(outsider, sys.slashing, 'propose', [s.provider, s.evidenceHash, s.fraction, s.deadline, await slashSignatures(sys, checkers, s)]);
  const [slashEv] = parseEventLogs({ abi: sys.slashing.abi, logs: pr.logs, eventName: 'SlashProposed' });
  assert.ok((await read(sys.slashing, 'frozenUntil', [provider.address])) > 0n, 'a pending slash freezes the stake');

  const wanted = {
    setMinProviderStake: 250n * TOKEN, setMinCheckerStake: 75n * TOKEN, setSlashFraction: 2500n, setCheckerQuorum: 3n,
    setProtocolFee: 250n, setUnbondingDelay: 21n * 86400n, setWithdrawalDelay: 3n * 86400n, setChallengeWindow: 4n * 86400n,
    setExecutionWindow: 2n * 86400n, setTreasury: accounts[12].address,
  };
  const targets = [];
  const calldatas = [];
  for (const [fn, value] of Object.entries(wanted)) {
    targets.push(sys.params.address);
    calldatas.push(viem.encodeFunctionData({ abi: sys.params.abi, functionName: fn, args: [value] }));
  }
  targets.push(sys.slashing.address);
  calldatas.push(viem.encodeFunctionData({ abi: sys.slashing.abi, functionName: 'cancel', args: [slashEv.args.id] }));
  const values = targets.map(() => 0n);
  const description = 'Raise stakes and fees; uphold the appeal of a disputed slash';
  const descriptionHash = viem.keccak256(viem.toHex(description));

  const r = await send(voters[0], sys.governor, 'propose', [targets, values, calldatas, description]);
  const [ev] = parseEventLogs({ abi: sys.governor.abi, logs: r.logs, eventName: 'ProposalCreated' });
  const id = ev.args.proposalId;
  const state = async () => Number(await read(sys.governor, 'state', [id]));
  assert.equal(await state(), 0); // Pending
  await testClient.mine({ blocks: GOV.votingDelay + 1 });
  assert.equal(await state(), 1); // Active
  await send(voters[0], sys.governor, 'castVote', [id, 1]); // for
  await send(voters[1], sys.governor, 'castVote', [id, 1]);
  await send(voters[2], sys.governor, 'castVote', [id, 0]); // against
  await reverts(send(voters[0], sys.governor, 'queue', [targets, values, calldatas, descriptionHash]), 'GovernorUnexpectedProposalState');
  await testClient.mine({ blocks: GOV.votingPeriod + 1 });
  assert.equal(await state(), 4); // Succeeded
  await send(outsider, sys.governor, 'queue', [targets, values, calldatas, descriptionHash]);
  assert.equal(await state(), 5); // Queued
  await reverts(send(outsider, sys.governor, 'execute', [targets, values, calldatas, descriptionHash]), 'TimelockUnexpectedOperationState');
  await increaseTime(GOV.timelockDelay);
  await send(outsider, sys.governor, 'execute', [targets, values, calldatas, descriptionHash]);
  assert.equal(await state(), 7); // Executed

  for (const [fn, value] of Object.entries(wanted)) {
    const getter = fn[3].toLowerCase() + fn.slice(4);
    assert.equal(await read(sys.params, getter), value, getter);
  }
  const p = await read(sys.slashing, 'getProposal', [slashEv.args.id]);
  assert.equal(Number(p.status), 3); // Cancelled
  assert.equal(await read(sys.slashing, 'frozenUntil', [provider.address]), 0n, 'the cancelled slash no longer freezes it');
  await increaseTime(DEFAULT_PARAMS.challengeWindow);
  await reverts(send(outsider, sys.slashing, 'execute', [slashEv.args.id]), 'NotPending');
  assert.ok((await pub.getBlockNumber()) > 0n);
});

test('a proposal that fails its vote changes nothing', async () => {
  const targets = [sys.params.address];
  const calldatas = [viem.encodeFunctionData({ abi: sys.params.abi, functionName: 'setProtocolFee', args: [999n] })];
  const values = [0n];
  const description = 'Fee grab';
  const r = await send(outsider, sys.governor, 'propose', [targets, values, calldatas, description]);
  const [ev] = parseEventLogs({ abi: sys.governor.abi, logs: r.logs, eventName: 'ProposalCreated' });
  await testClient.mine({ blocks: GOV.votingDelay + 1 });
  await send(voters[0], sys.governor, 'castVote', [ev.args.proposalId, 0]);
  await send(voters[1], sys.governor, 'castVote', [ev.args.proposalId, 0]);
  await testClient.mine({ blocks: GOV.votingPeriod + 1 });
  assert.equal(Number(await read(sys.governor, 'state', [ev.args.proposalId])), 3); // Defeated
  await reverts(send(outsider, sys.governor, 'queue', [targets, values, calldatas, viem.keccak256(viem.toHex(description))]), 'GovernorUnexpectedProposalState');
  assert.equal(await read(sys.params, 'protocolFee'), 250n);
});
