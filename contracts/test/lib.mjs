// Shared by the contract tests: clients for the anvil node that run.mjs started (ANVIL_URL), the
// artifacts, a full deployment, and signers for vouchers, bindings and slashes.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateKeyPairSync, sign as edSign, verify as edVerify, createPublicKey } from 'node:crypto';
import assert from 'node:assert/strict';
import { CONTRACTS, requireDep } from '../lib/env.mjs';

export const viem = requireDep('viem');
export const accountsLib = requireDep('viem/accounts');
const { createPublicClient, createWalletClient, createTestClient, http, getContract, parseAbiItem } = viem;
const { mnemonicToAccount, privateKeyToAccount, generatePrivateKey } = accountsLib;

export const URL = process.env.ANVIL_URL;
if (!URL) throw new Error('ANVIL_URL is not set: run the tests with node contracts/test/run.mjs');
export const CHAIN_ID = 31337;
export const chain = {
  id: CHAIN_ID,
  name: 'anvil',
  nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
  rpcUrls: { default: { http: [URL] } },
};
const transport = http(URL, { timeout: 60_000 });
export const pub = createPublicClient({ chain, transport, pollingInterval: 50 });
export const testClient = createTestClient({ chain, transport, mode: 'anvil' });

export const MNEMONIC = 'test test test test test test test test test test test junk';
export const ACCOUNT_COUNT = Number(process.env.ANVIL_ACCOUNTS || 20);
export const accounts = Array.from({ length: ACCOUNT_COUNT }, (_, i) => mnemonicToAccount(MNEMONIC, { addressIndex: i }));
export const wallet = (account) => createWalletClient({ account, chain, transport });

export function artifact(name) {
  return JSON.parse(readFileSync(join(CONTRACTS, 'artifacts', `${name}.json`), 'utf8'));
}

export const TOKEN = 1_000_000n; // one token in base units (6 decimals)

/// Sends a contract call and waits for its receipt; throws (with the decoded custom error in the
/// message) when it reverts. The gas limit is the estimate plus a margin, as a wallet sets it:
/// the estimate is the exact least gas at the latest block's time, and a branch that depends on
/// the block time (a slash's cap window opening, a later expiry) can cost a little more in the
/// next block.
export async function send(account, contract, fn, args = [], opts = {}) {
  const call = { address: contract.address, abi: contract.abi, functionName: fn, args, account, ...opts };
  const gas = opts.gas ?? ((await pub.estimateContractGas(call)) * 6n) / 5n + 20_000n;
  const hash = await wallet(account).writeContract({ ...call, gas });
  const receipt = await pub.waitForTransactionReceipt({ hash, pollingInterval: 20 });
  if (receipt.status !== 'success') throw new Error(`${fn} reverted on chain`);
  return receipt;
}

/// Asserts that the call reverts, with the named custom error if given.
export async function reverts(promise, errorName) {
  let err;
  try {
    await promise;
  } catch (e) {
    err = e;
  }
  assert.ok(err, `expected a revert${errorName ? ` with ${errorName}` : ''}, the call succeeded`);
  if (errorName) {
    const text = `${err.message}\n${err.cause?.message ?? ''}\n${JSON.stringify(err.cause?.data ?? '', (_, x) => (typeof x === 'bigint' ? x.toString() : x))}`;
    assert.ok(text.includes(`${errorName}(`), `expected ${errorName}, got: ${err.shortMessage ?? err.message}`);
  }
  return err;
}

export async function deployContract(account, name, args = []) {
  const a = artifact(name);
  const hash = await wallet(account).deployContract({ abi: a.abi, bytecode: a.bytecode, args });
  const receipt = await pub.waitForTransactionReceipt({ hash, pollingInterval: 20 });
  assert.equal(receipt.status, 'success', `deploying ${name}`);
  return { address: viem.getAddress(receipt.contractAddress), abi: a.abi, name, gas: receipt.gasUsed };
}

export const read = (contract, fn, args = []) => pub.readContract({ address: contract.address, abi: contract.abi, functionName: fn, args });

export const DEFAULT_PARAMS = {
  minProviderStake: 100n * TOKEN,
  minCheckerStake: 50n * TOKEN,
  slashFraction: 1000n, // 10 %
  checkerQuorum: 2n,
  protocolFee: 100n, // 1 %
  unbondingDelay: 14n * 86400n,
  withdrawalDelay: 2n * 86400n,
  challengeWindow: 3n * 86400n,
  executionWindow: 86400n,
};
export const GOV = { votingDelay: 1, votingPeriod: 50, threshold: 0n, quorumPercent: 4n, timelockDelay: 3600n };

/// Deploys the whole settlement layer. `holders` get `each` tokens; accounts[0] deploys.
export async function deployAll({ holders = accounts, each = 1_000_000n * TOKEN, params = {}, treasury } = {}) {
  const deployer = accounts[0];
  const token = await deployContract(deployer, 'GanglionToken', [holders.map((a) => a.address), holders.map(() => each)]);
  const timelock = await deployContract(deployer, 'TimelockController', [GOV.timelockDelay, [], ['0x0000000000000000000000000000000000000000'], deployer.address]);
  const governor = await deployContract(deployer, 'GanglionGovernor', [token.address, timelock.address, GOV.votingDelay, GOV.votingPeriod, GOV.threshold, GOV.quorumPercent]);
  // The governor's calls revert with the timelock's errors too: let viem decode them.
  governor.abi = [...governor.abi, ...timelock.abi.filter((x) => x.type === 'error' && !governor.abi.some((g) => g.type === 'error' && g.name === x.name))];
  const proposer = await read(timelock, 'PROPOSER_ROLE');
  const canceller = await read(timelock, 'CANCELLER_ROLE');
  const admin = await read(timelock, 'DEFAULT_ADMIN_ROLE');
  await send(deployer, timelock, 'grantRole', [proposer, governor.address]);
  await send(deployer, timelock, 'grantRole', [canceller, governor.address]);
  await send(deployer, timelock, 'renounceRole', [admin, deployer.address]);
  const p = { ...DEFAULT_PARAMS, ...params, treasury: treasury ?? accounts[ACCOUNT_COUNT - 1].address };
  const paramsC = await deployContract(deployer, 'Params', [timelock.address, p]);
  const escrow = await deployContract(deployer, 'Escrow', [token.address, paramsC.address]);
  const registry = await deployContract(deployer, 'Registry', [token.address, paramsC.address, escrow.address]);
  const slashing = await deployContract(deployer, 'Slashing', [paramsC.address, registry.address]);
  await send(deployer, registry, 'setSlashing', [slashing.address]);
  return { token, timelock, governor, params: paramsC, escrow, registry, slashing, treasury: p.treasury, deployer };
}

// --- signatures ---------------------------------------------------------------------------------

export const domain = (verifyingContract) => ({ name: 'Ganglion', version: '1', chainId: CHAIN_ID, verifyingContract });
export const VOUCHER_TYPES = {
  Voucher: [
    { name: 'robot', type: 'address' },
    { name: 'provider', type: 'address' },
    { name: 'session', type: 'uint64' },
    { name: 'cumulative', type: 'uint256' },
  ],
};
export const BINDING_TYPES = { PayKeyBinding: [{ name: 'node', type: 'bytes32' }] };
export const SLASH_TYPES = {
  Slash: [
    { name: 'provider', type: 'address' },
    { name: 'evidenceHash', type: 'bytes32' },
    { name: 'fraction', type: 'uint256' },
    { name: 'deadline', type: 'uint64' },
  ],
};
/// A Slash deadline that never passes (the largest uint64).
export const FAR_DEADLINE = 2n ** 64n - 1n;

export async function signVoucher(robotAccount, escrow, v) {
  return robotAccount.signTypedData({ domain: domain(escrow.address), types: VOUCHER_TYPES, primaryType: 'Voucher', message: v });
}

export async function signSlash(checkerAccount, slashing, s) {
  return checkerAccount.signTypedData({ domain: domain(slashing.address), types: SLASH_TYPES, primaryType: 'Slash', message: s });
}

export const randomAccount = () => privateKeyToAccount(generatePrivateKey());

/// A fresh Ed25519 node key: its 32-byte public key as bytes32 hex, and a signer.
export function nodeKey() {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const raw = Buffer.from(publicKey.export({ format: 'jwk' }).x, 'base64url');
  return {
    id: `0x${raw.toString('hex')}`,
    sign: (bytes) => `0x${edSign(null, bytes, privateKey).toString('hex')}`,
  };
}

/// What the node key signs for a binding (crates/ganglion-types: "ganglion/" ‖ domain ‖ 0 ‖ address).
export function bindingMessage(address) {
  return Buffer.concat([Buffer.from('ganglion/pay-key-binding'), Buffer.from([0]), Buffer.from(address.slice(2), 'hex')]);
}

/// Checks an Ed25519 binding signature off chain, as any node would from the Bound event.
export function verifyNodeSignature(nodeId, address, signature) {
  const spki = Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), Buffer.from(nodeId.slice(2), 'hex')]);
  const key = createPublicKey({ key: spki, format: 'der', type: 'spki' });
  return edVerify(null, bindingMessage(address), key, Buffer.from(signature.slice(2), 'hex'));
}

/// Binds a fresh node key to `account` in the registry (submitted by `account`).
export async function bind(sys, account, node = nodeKey()) {
  const payKeySignature = await account.signTypedData({ domain: domain(sys.escrow.address), types: BINDING_TYPES, primaryType: 'PayKeyBinding', message: { node: node.id } });
  const nodeSignature = node.sign(bindingMessage(account.address));
  const receipt = await send(account, sys.registry, 'bind', [node.id, payKeySignature, nodeSignature]);
  return { node, receipt, payKeySignature, nodeSignature };
}

export const ROLE = { None: 0, Provider: 1, Checker: 2 };

export async function approve(account, sys, spender, amount) {
  return send(account, sys.token, 'approve', [spender.address, amount]);
}

export async function stakeAs(sys, account, role, amount) {
  await approve(account, sys, sys.registry, amount);
  return send(account, sys.registry, 'stake', [role, amount]);
}

/// Funds the channel robot → provider with `amount` from `from`.
export async function depositFor(sys, from, robot, provider, amount) {
  await approve(from, sys, sys.escrow, amount);
  return send(from, sys.escrow, 'deposit', [robot.address ?? robot, provider.address ?? provider, amount]);
}

/// Slashing.propose's arguments for the slash `s` and its signatures.
export const proposeArgs = (s, signatures) => [s.provider, s.evidenceHash, s.fraction, s.deadline, signatures];

/// Signs a slash by each checker, sorted by address as Slashing.propose wants.
export async function slashSignatures(sys, checkers, s) {
  const sorted = [...checkers].sort((a, b) => (BigInt(a.address) < BigInt(b.address) ? -1 : 1));
  return Promise.all(sorted.map((c) => signSlash(c, sys.slashing, s)));
}

export const increaseTime = async (seconds) => {
  await testClient.increaseTime({ seconds: Number(seconds) });
  await testClient.mine({ blocks: 1 });
};

export const parseEventLogs = viem.parseEventLogs;
export { parseAbiItem, getContract };
