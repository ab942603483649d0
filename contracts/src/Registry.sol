// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {MessageHashUtils} from "@openzeppelin/contracts/utils/cryptography/MessageHashUtils.sol";
import {Params} from "./Params.sol";

/// What the Registry asks the Slashing contract before releasing a provider's unbonded stake.
interface IStakeFreeze {
    /// Non-zero while a slash against `provider` is pending: the time until which it holds.
    function frozenUntil(address provider) external view returns (uint64);
}

/// @title Ganglion registry: node identities, pay keys and stakes
/// @notice A binding ties a machine's node identity (its Ed25519 public key, bytes32) to its EVM
/// address (its pay key). Each key signs the other:
///   - the pay key signs EIP-712 `PayKeyBinding(bytes32 node)` in the Ganglion domain
///     (name "Ganglion", version "1", the chain id, verifyingContract = the Escrow's address:
///     the same domain as vouchers, as crates/ganglion-types/src/pay/voucher.rs signs it). This
///     contract checks it with OpenZeppelin's ECDSA and the pay key is the recovered signer.
///   - the node key signs, with Ed25519, the bytes "ganglion/pay-key-binding" ‖ 0x00 ‖ the
///     20-byte address. The EVM has no Ed25519 precompile and verifying it in Solidity costs
///     too much gas, so this contract does NOT check it: it stores nothing but emits it in the
///     `Bound` event with the binding, so anyone can check it off chain (a binding whose Ed25519
///     signature does not verify is to be ignored by every node).
/// An address is bound to at most one node (`nodeOf`), once. A node id is NOT unique on chain:
/// since the Ed25519 half is not checked here, anyone could bind a victim's node id to an address
/// of theirs (the pay-key signature is theirs to make), and uniqueness would let that squatter
/// lock the real owner out for good. So several addresses may claim the same node; an off-chain
/// reader (a node, a robot) takes as the node's pay key the address of the binding whose Ed25519
/// signature (in its `Bound` event) verifies for that node and address, and ignores the others.
/// The zero node id is refused.
///
/// Stakes: a bound address deposits tokens as a provider or a checker (one role per address).
/// Unbonding moves stake out of the active amount at once; it can be withdrawn after
/// `params.unbondingDelay()`, and until then it can still be slashed. The Slashing contract, and
/// it alone, may slash a provider's stake (active and unbonding). While a slash against a
/// provider is pending (Slashing's `frozenUntil`), its unbonded stake cannot be withdrawn, even
/// once the delay has passed (`SlashPending`).
contract Registry {
    using SafeERC20 for IERC20;

    enum Role {
        None,
        Provider,
        Checker
    }

    struct Stake {
        Role role;
        uint64 unbondAt;
        uint128 active;
        uint128 unbonding;
    }

    bytes32 public constant PAYKEY_BINDING_TYPEHASH = keccak256("PayKeyBinding(bytes32 node)");
    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");

    IERC20 public immutable token;
    Params public immutable params;
    /// The verifyingContract of the binding's EIP-712 domain (the Escrow).
    address public immutable escrow;
    address private immutable deployer;
    /// The only caller of `slash`; set once, at deployment.
    address public slashing;

    mapping(address account => bytes32) public nodeOf;
    mapping(address account => Stake) public stakes;

    event Bound(bytes32 indexed node, address indexed account, bytes nodeSignature);
    event Staked(address indexed account, Role role, uint256 amount);
    event UnbondRequested(address indexed account, uint256 amount, uint64 unbondAt);
    event Unbonded(address indexed account, uint256 amount);
    event Slashed(address indexed provider, uint256 fraction, uint256 amount);
    event SlashingSet(address slashing);

    error AlreadyBound();
    error ZeroNode();
    error NotBound();
    error BadNodeSignatureLength();
    error WrongRole(Role have);
    error ZeroAmount();
    error AmountTooLarge();
    error InsufficientStake(uint256 have, uint256 want);
    error TooEarly(uint64 unbondAt);
    error SlashPending(uint64 frozenUntil);
    error NotSlashing();
    error SlashingAlreadySet();
    error NotDeployer();

    constructor(IERC20 token_, Params params_, address escrow_) {
        token = token_;
        params = params_;
        escrow = escrow_;
        deployer = msg.sender;
    }

    /// Names the Slashing contract, once; the deployer has no other power.
    function setSlashing(address slashing_) external {
        if (msg.sender != deployer) revert NotDeployer();
        if (slashing != address(0)) revert SlashingAlreadySet();
        slashing = slashing_;
        emit SlashingSet(slashing_);
    }

    // --- bindings ---------------------------------------------------------------------------

    function domainSeparator() public view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, keccak256("Ganglion"), keccak256("1"), block.chainid, escrow));
    }

    function bindingDigest(bytes32 node) public view returns (bytes32) {
        return MessageHashUtils.toTypedDataHash(
            domainSeparator(), keccak256(abi.encode(PAYKEY_BINDING_TYPEHASH, node))
        );
    }

    /// Binds `node` to the address that signed `payKeySignature` (anyone may submit it).
    /// `nodeSignature` (64 bytes, Ed25519) is emitted, not checked: see the contract's notice
    /// (the node id may already be claimed by other addresses; readers keep the binding whose
    /// Ed25519 signature verifies).
    function bind(bytes32 node, bytes calldata payKeySignature, bytes calldata nodeSignature)
        external
        returns (address account)
    {
        if (node == bytes32(0)) revert ZeroNode();
        if (nodeSignature.length != 64) revert BadNodeSignatureLength();
        account = ECDSA.recover(bindingDigest(node), payKeySignature);
        if (nodeOf[account] != bytes32(0)) revert AlreadyBound();
        nodeOf[account] = node;
        emit Bound(node, account, nodeSignature);
    }

    // --- stakes -----------------------------------------------------------------------------

    /// Adds `amount` to the caller's active stake in `role` (the caller must be bound).
    function stake(Role role, uint256 amount) external {
        if (nodeOf[msg.sender] == bytes32(0)) revert NotBound();
        if (amount == 0) revert ZeroAmount();
        Stake storage s = stakes[msg.sender];
        if (role == Role.None || (s.role != Role.None && s.role != role)) revert WrongRole(s.role);
        s.role = role;
        uint256 a = uint256(s.active) + amount;
        if (a > type(uint128).max) revert AmountTooLarge();
        s.active = uint128(a);
        token.safeTransferFrom(msg.sender, address(this), amount);
        emit Staked(msg.sender, role, amount);
    }

    /// Moves `amount` of active stake to unbonding; withdrawable after the unbonding delay
    /// (the delay restarts with every request).
    function requestUnbond(uint256 amount) external {
        Stake storage s = stakes[msg.sender];
        if (amount == 0) revert ZeroAmount();
        if (amount > s.active) revert InsufficientStake(s.active, amount);
        s.active -= uint128(amount);
        s.unbonding += uint128(amount);
        uint64 at = uint64(block.timestamp + params.unbondingDelay());
        s.unbondAt = at;
        emit UnbondRequested(msg.sender, amount, at);
    }

    function withdrawUnbonded() external returns (uint256 amount) {
        Stake storage s = stakes[msg.sender];
        amount = s.unbonding;
        if (amount == 0) revert ZeroAmount();
        if (block.timestamp < s.unbondAt) revert TooEarly(s.unbondAt);
        if (s.role == Role.Provider && slashing != address(0)) {
            uint64 until = IStakeFreeze(slashing).frozenUntil(msg.sender);
            if (until != 0) revert SlashPending(until);
        }
        s.unbonding = 0;
        token.safeTransfer(msg.sender, amount);
        emit Unbonded(msg.sender, amount);
    }

    function isStakedProvider(address account) external view returns (bool) {
        Stake storage s = stakes[account];
        return s.role == Role.Provider && s.active >= params.minProviderStake() && s.active > 0;
    }

    function isStakedChecker(address account) public view returns (bool) {
        Stake storage s = stakes[account];
        return s.role == Role.Checker && s.active >= params.minCheckerStake() && s.active > 0;
    }

    /// Takes `fraction` (bps) of the provider's whole stake (active first, then unbonding) to the
    /// treasury. Only the Slashing contract may call it.
    function slash(address provider, uint256 fraction) external returns (uint256 amount) {
        if (msg.sender != slashing || slashing == address(0)) revert NotSlashing();
        Stake storage s = stakes[provider];
        if (s.role != Role.Provider) revert WrongRole(s.role);
        if (fraction > 10_000) fraction = 10_000;
        uint256 total = uint256(s.active) + s.unbonding;
        amount = (total * fraction) / 10_000;
        uint256 fromActive = amount < s.active ? amount : s.active;
        s.active -= uint128(fromActive);
        s.unbonding -= uint128(amount - fromActive);
        if (amount > 0) token.safeTransfer(params.treasury(), amount);
        emit Slashed(provider, fraction, amount);
    }
}
