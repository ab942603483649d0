// Params bounds every value and keeps the cross-parameter invariants, at construction and in
// every setter (InvalidParam): no duration can wrap the uint64 timestamps built from it, and
// unbondingDelay > challengeWindow + executionWindow always holds.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { accounts, artifact, deployContract, read, send, reverts, pub, DEFAULT_PARAMS, viem } from './lib.mjs';

const owner = accounts[1];
const treasury = accounts[2].address;
const DAY = 86400n;
const U128 = 2n ** 128n - 1n;
const MAX_DURATION = 3650n * DAY;
const init = (over = {}) => ({ ...DEFAULT_PARAMS, treasury, ...over });
let params;

/// Deploying Params with `p` reverts with InvalidParam(name, value).
async function constructorRefuses(p, name, value) {
  const a = artifact('Params');
  const data = viem.encodeDeployData({ abi: a.abi, bytecode: a.bytecode, args: [owner.address, p] });
  let err;
  try { await pub.call({ account: owner.address, data }); } catch (e) { err = e; }
  assert.ok(err, `constructor accepted ${name} = ${value}`);
  let raw = err;
  while (raw && typeof raw.data !== 'string') raw = raw.cause;
  assert.ok(raw, `no revert data for ${name} = ${value}: ${err.message}`);
  const decoded = viem.decodeErrorResult({ abi: a.abi, data: raw.data });
  assert.equal(decoded.errorName, 'InvalidParam');
  assert.equal(viem.hexToString(decoded.args[0], { size: 32 }).replace(/\0+$/, ''), name);
  assert.equal(decoded.args[1], value);
}

before(async () => {
  params = await deployContract(accounts[0], 'Params', [owner.address, init()]);
});

test('the constructor refuses out-of-range values and broken cross-checks', async () => {
  const cases = [
    [{ minProviderStake: U128 + 1n }, 'minProviderStake', U128 + 1n],
    [{ minCheckerStake: U128 + 1n }, 'minCheckerStake', U128 + 1n],
    [{ slashFraction: 0n }, 'slashFraction', 0n],
    [{ slashFraction: 10_001n }, 'slashFraction', 10_001n],
    [{ checkerQuorum: 0n }, 'checkerQuorum', 0n],
    [{ checkerQuorum: 101n }, 'checkerQuorum', 101n],
    [{ protocolFee: 1001n }, 'protocolFee', 1001n],
    // 2^64 + 1 s would wrap `uint64(block.timestamp + delay)` to a past time.
    [{ unbondingDelay: 2n ** 64n + 1n }, 'unbondingDelay', 2n ** 64n + 1n],
    [{ unbondingDelay: MAX_DURATION + 1n }, 'unbondingDelay', MAX_DURATION + 1n],
    [{ withdrawalDelay: 0n }, 'withdrawalDelay', 0n],
    [{ withdrawalDelay: 2n ** 63n }, 'withdrawalDelay', 2n ** 63n],
    [{ challengeWindow: 0n }, 'challengeWindow', 0n],
    [{ challengeWindow: 2n ** 64n - 1n }, 'challengeWindow', 2n ** 64n - 1n],
    [{ executionWindow: 0n }, 'executionWindow', 0n],
    [{ executionWindow: 2n ** 64n }, 'executionWindow', 2n ** 64n],
    // unbondingDelay must exceed challengeWindow + executionWindow (3 + 1 days by default).
    [{ unbondingDelay: 4n * DAY }, 'unbondingDelay', 4n * DAY],
    [{ unbondingDelay: 2n * DAY }, 'unbondingDelay', 2n * DAY],
    [{ challengeWindow: 13n * DAY }, 'unbondingDelay', DEFAULT_PARAMS.unbondingDelay],
  ];
  for (const [over, name, value] of cases) await constructorRefuses(init(over), name, value);
  // The bounds themselves are fine.
  await deployContract(accounts[0], 'Params', [owner.address, init({
    minProviderStake: U128, minCheckerStake: U128, slashFraction: 10_000n, checkerQuorum: 100n, protocolFee: 1000n,
    unbondingDelay: MAX_DURATION, withdrawalDelay: MAX_DURATION, challengeWindow: 1n, executionWindow: 1n,
  })]);
  await deployContract(accounts[0], 'Params', [owner.address, init({ unbondingDelay: 4n * DAY + 1n, slashFraction: 1n, checkerQuorum: 1n, protocolFee: 0n, withdrawalDelay: 1n })]);
});

test('every setter refuses out-of-range values and leaves the old value', async () => {
  const bad = [
    ['setMinProviderStake', 'minProviderStake', U128 + 1n],
    ['setMinCheckerStake', 'minCheckerStake', U128 + 1n],
    ['setSlashFraction', 'slashFraction', 0n], ['setSlashFraction', 'slashFraction', 10_001n],
    ['setCheckerQuorum', 'checkerQuorum', 0n], ['setCheckerQuorum', 'checkerQuorum', 101n],
    ['setProtocolFee', 'protocolFee', 1001n],
    ['setUnbondingDelay', 'unbondingDelay', 2n ** 64n + 1n], ['setUnbondingDelay', 'unbondingDelay', MAX_DURATION + 1n],
    ['setWithdrawalDelay', 'withdrawalDelay', 0n], ['setWithdrawalDelay', 'withdrawalDelay', 2n ** 64n],
    ['setChallengeWindow', 'challengeWindow', 0n], ['setChallengeWindow', 'challengeWindow', 2n ** 64n + 5n],
    ['setExecutionWindow', 'executionWindow', 0n], ['setExecutionWindow', 'executionWindow', MAX_DURATION + 1n],
  ];
  for (const [fn, getter, value] of bad) {
    const old = await read(params, getter);
    await reverts(send(owner, params, fn, [value]), 'InvalidParam');
    assert.equal(await read(params, getter), old, `${fn}(${value}) changed ${getter}`);
  }
});

test('setters keep unbondingDelay > challengeWindow + executionWindow', async () => {
  // Defaults: unbonding 14 days, challenge 3, execution 1.
  await reverts(send(owner, params, 'setUnbondingDelay', [4n * DAY]), 'InvalidParam');
  await reverts(send(owner, params, 'setChallengeWindow', [13n * DAY]), 'InvalidParam');
  await reverts(send(owner, params, 'setExecutionWindow', [11n * DAY]), 'InvalidParam');
  assert.equal(await read(params, 'unbondingDelay'), DEFAULT_PARAMS.unbondingDelay);
  assert.equal(await read(params, 'challengeWindow'), DEFAULT_PARAMS.challengeWindow);
  assert.equal(await read(params, 'executionWindow'), DEFAULT_PARAMS.executionWindow);
  // In an order that keeps it at every step, all three move.
  await send(owner, params, 'setChallengeWindow', [12n * DAY]);
  await send(owner, params, 'setExecutionWindow', [DAY + 1n]);
  await reverts(send(owner, params, 'setExecutionWindow', [2n * DAY]), 'InvalidParam'); // 14 = 12 + 2
  await send(owner, params, 'setUnbondingDelay', [30n * DAY]);
  await send(owner, params, 'setExecutionWindow', [17n * DAY]);
  assert.equal(await read(params, 'executionWindow'), 17n * DAY);
  await reverts(send(owner, params, 'setUnbondingDelay', [29n * DAY]), 'InvalidParam');
});
