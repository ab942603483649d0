// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {Params} from "./Params.sol";
import {Registry} from "./Registry.sol";

/// @title Ganglion slashing: a quorum of staked checkers slashes a provider, after a window
/// @notice Each checker signs, with its pay key (the address bound and staked as a checker in the
/// Registry), EIP-712
///     Slash(address provider,bytes32 evidenceHash,uint256 fraction,uint64 deadline)
/// in the domain name "Ganglion", version "1", the chain id, verifyingContract = this contract.
/// `evidenceHash` is the keccak256 of the evidence file (the checkers' signed findings); it is
/// stored on chain with the proposal, so anyone holding the file can re-check it. `fraction` is in
/// basis points of the provider's whole stake, at most `params.slashFraction()`. `deadline` (unix
/// seconds) is the last block timestamp at which the signature may be used in `propose`; after it
/// the signature is refused (`SignatureExpired`), so a signature cannot be kept back and used
/// long after the checker signed it.
///
/// Life of a slash:
///   1. propose(provider, evidenceHash, fraction, deadline, signatures): anyone submits, by the
///      deadline, at least `params.checkerQuorum()` signatures, from distinct staked checkers,
///      given in strictly increasing signer-address order (which is how distinctness is checked).
///      Refused without quorum. A proposal is identified by (provider, evidenceHash, fraction)
///      and made once, ever; the same evidence may be proposed again with another fraction, so a
///      quorum (of sybils, say) that front-runs the real slash with a tiny fraction cannot burn
///      the evidence: the real fraction is still proposable.
///   2. Challenge window, `params.challengeWindow()` seconds from the proposal: the slash cannot
///      execute. During it, governance (the owner of Params, i.e. the timelock after a vote) may
///      cancel it: that is the appeal. The window must therefore exceed the governance
///      path (voting delay + voting period + timelock delay) for an appeal to be possible.
///   3. Execution window, the next `params.executionWindow()` seconds: anyone may execute it; the
///      signers are counted again and must still be staked checkers, at least the current quorum
///      (a checker that unbonded meanwhile no longer vouches for it).
///   4. After that the proposal has expired and is refused for good.
/// Both windows are fixed when the slash is proposed.
///
/// One evidence: per (provider, evidenceHash) the contract keeps what its executed slashes took
/// (`evidenceSlashed`, bps). Executing a proposal takes only `fraction − evidenceSlashed`
/// (nothing if that is ≤ 0: it is then marked executed, taking nothing), and a new proposal must
/// ask for more than was taken (`NothingToSlash`). So one evidence takes in total at most the
/// largest fraction proposed for it, itself at most `slashFraction`.
///
/// Cap window: per provider, the slashes executed within one cap window take together at most
/// `params.slashFraction()` bps. A window opens at the first execution after the previous one
/// closed and lasts `params.challengeWindow()` (as it is then); an execution takes min(what it
/// asks, what is left of the cap), and reverts `SlashCapReached` when nothing is left (the
/// proposal stays pending; it may execute in a later window if its execution window is still
/// open). So many parallel proposals with different evidence, proposed together, execute together
/// and take at most `slashFraction`; taking more needs proposals spread over time, each of them
/// open to appeal for a whole challenge window. (Any span shorter than the window meets at most
/// two windows: at most 2 × slashFraction.)
///
/// Freeze: while a slash against a provider is pending (proposed, neither executed nor cancelled,
/// not expired), `frozenUntil(provider)` is non-zero and the Registry refuses to let the provider
/// withdraw unbonded stake (`SlashPending`), so a matured unbonding cannot be pulled out from
/// under a slash. (Params also keeps unbondingDelay > challengeWindow + executionWindow.)
contract Slashing is EIP712 {
    bytes32 public constant SLASH_TYPEHASH =
        keccak256("Slash(address provider,bytes32 evidenceHash,uint256 fraction,uint64 deadline)");

    enum Status {
        None,
        Pending,
        Executed,
        Cancelled
    }

    struct Proposal {
        address provider;
        Status status;
        uint64 executeAfter;
        uint64 expiresAt;
        uint256 fraction;
        bytes32 evidenceHash;
        address[] signers;
    }

    Params public immutable params;
    Registry public immutable registry;

    mapping(bytes32 id => Proposal) private proposals;
    /// Bps taken so far by the executed slashes of keccak256(abi.encode(provider, evidenceHash)).
    mapping(bytes32 evidenceKey => uint256) private taken;

    /// (One storage slot each, so that whether a window opens or an expiry moves changes the gas
    /// little: a client's gas estimate made a block earlier still holds.)
    struct CapWindow {
        uint64 end; // the window is [end − challengeWindow, end)
        uint192 used; // bps taken in it
    }

    /// Per provider, the current cap window.
    mapping(address provider => CapWindow) public capWindows;

    struct Freeze {
        uint64 latestExpiry; // the latest expiry among all the provider's proposals
        uint192 pending; // proposals not executed or cancelled (expired ones stay counted)
    }

    /// Per provider, what `frozenUntil` is computed from.
    mapping(address provider => Freeze) public freezes;

    event SlashProposed(
        bytes32 indexed id,
        address indexed provider,
        bytes32 evidenceHash,
        uint256 fraction,
        uint64 executeAfter,
        uint64 expiresAt,
        address[] signers
    );
    event SlashExecuted(bytes32 indexed id, address indexed provider, uint256 amount);
    event SlashCancelled(bytes32 indexed id);

    error AlreadyProposed(bytes32 id);
    error BadFraction(uint256 fraction, uint256 max);
    error NotProvider(address provider);
    error SignersNotIncreasing(address signer);
    error NotStakedChecker(address signer);
    error NoQuorum(uint256 have, uint256 want);
    error NotPending(bytes32 id);
    error InChallengeWindow(uint64 executeAfter);
    error Expired(uint64 expiresAt);
    error NotGovernance();
    error SignatureExpired(uint64 deadline);
    error NothingToSlash(uint256 alreadyTaken);
    error SlashCapReached(uint64 windowEnd);

    constructor(Params params_, Registry registry_) EIP712("Ganglion", "1") {
        params = params_;
        registry = registry_;
    }

    function proposalId(address provider, bytes32 evidenceHash, uint256 fraction) public pure returns (bytes32) {
        return keccak256(abi.encode(provider, evidenceHash, fraction));
    }

    /// Until when the provider's unbonded stake is frozen (0: not frozen): the latest expiry among
    /// its proposals while any of them is pending and that expiry is in the future. (It may
    /// outlast the pending ones by at most the last proposal's own windows: if an earlier
    /// proposal is left to expire and a later one has executed, it holds until the later one's
    /// expiry; that never freezes beyond what a pending proposal could.)
    function frozenUntil(address provider) external view returns (uint64) {
        Freeze storage f = freezes[provider];
        if (f.pending == 0 || block.timestamp >= f.latestExpiry) return 0;
        return f.latestExpiry;
    }

    /// Bps of the provider's stake that the executed slashes of this evidence took in total.
    function evidenceSlashed(address provider, bytes32 evidenceHash) public view returns (uint256) {
        return taken[keccak256(abi.encode(provider, evidenceHash))];
    }

    function slashDigest(address provider, bytes32 evidenceHash, uint256 fraction, uint64 deadline)
        public
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(keccak256(abi.encode(SLASH_TYPEHASH, provider, evidenceHash, fraction, deadline)));
    }

    function getProposal(bytes32 id) external view returns (Proposal memory) {
        return proposals[id];
    }

    function propose(
        address provider,
        bytes32 evidenceHash,
        uint256 fraction,
        uint64 deadline,
        bytes[] calldata signatures
    ) external returns (bytes32 id) {
        if (block.timestamp > deadline) revert SignatureExpired(deadline);
        id = proposalId(provider, evidenceHash, fraction);
        Proposal storage p = proposals[id];
        if (p.status != Status.None) revert AlreadyProposed(id);
        uint256 max = params.slashFraction();
        if (fraction == 0 || fraction > max) revert BadFraction(fraction, max);
        uint256 done = evidenceSlashed(provider, evidenceHash);
        if (fraction <= done) revert NothingToSlash(done);
        (Registry.Role role,,,) = registry.stakes(provider);
        if (role != Registry.Role.Provider) revert NotProvider(provider);

        _recordSigners(p, slashDigest(provider, evidenceHash, fraction, deadline), signatures);

        p.provider = provider;
        p.status = Status.Pending;
        p.fraction = fraction;
        p.evidenceHash = evidenceHash;
        uint64 after_ = uint64(block.timestamp + params.challengeWindow());
        uint64 expires = uint64(after_ + params.executionWindow());
        p.executeAfter = after_;
        p.expiresAt = expires;
        Freeze storage f = freezes[provider];
        f.pending += 1;
        if (expires > f.latestExpiry) f.latestExpiry = expires;
        emit SlashProposed(id, provider, evidenceHash, fraction, after_, expires, p.signers);
    }

    /// Checks quorum: at least `params.checkerQuorum()` signatures of `digest`, from staked
    /// checkers in strictly increasing address order; stores the signers in `p`.
    function _recordSigners(Proposal storage p, bytes32 digest, bytes[] calldata signatures) private {
        uint256 quorum = params.checkerQuorum();
        if (signatures.length < quorum) revert NoQuorum(signatures.length, quorum);
        address last;
        for (uint256 i = 0; i < signatures.length; i++) {
            address signer = ECDSA.recover(digest, signatures[i]);
            if (signer <= last) revert SignersNotIncreasing(signer);
            if (!registry.isStakedChecker(signer)) revert NotStakedChecker(signer);
            last = signer;
            p.signers.push(signer);
        }
    }

    function execute(bytes32 id) external returns (uint256 amount) {
        Proposal storage p = proposals[id];
        if (p.status != Status.Pending) revert NotPending(id);
        if (block.timestamp < p.executeAfter) revert InChallengeWindow(p.executeAfter);
        if (block.timestamp >= p.expiresAt) revert Expired(p.expiresAt);
        uint256 still;
        for (uint256 i = 0; i < p.signers.length; i++) {
            if (registry.isStakedChecker(p.signers[i])) still++;
        }
        uint256 quorum = params.checkerQuorum();
        if (still < quorum) revert NoQuorum(still, quorum);
        p.status = Status.Executed;
        freezes[p.provider].pending -= 1;
        bytes32 key = keccak256(abi.encode(p.provider, p.evidenceHash));
        uint256 done = taken[key];
        if (p.fraction > done) {
            uint256 take = _takeFromCap(p.provider, p.fraction - done);
            taken[key] = done + take;
            amount = registry.slash(p.provider, take);
        }
        emit SlashExecuted(id, p.provider, amount);
    }

    /// Books up to `want` bps in the provider's cap window (opening a new window if the last one
    /// closed) and returns what it booked; reverts when the cap is spent.
    function _takeFromCap(address provider, uint256 want) private returns (uint256 take) {
        CapWindow storage w = capWindows[provider];
        if (block.timestamp >= w.end) {
            w.end = uint64(block.timestamp + params.challengeWindow());
            w.used = 0;
        }
        uint256 cap = params.slashFraction();
        uint256 left = cap > w.used ? cap - w.used : 0;
        if (left == 0) revert SlashCapReached(w.end);
        take = want < left ? want : left;
        w.used += uint192(take);
    }

    /// Governance's appeal: the owner of Params (the timelock) cancels a pending slash before it
    /// executes (and before it expires).
    function cancel(bytes32 id) external {
        if (msg.sender != params.owner()) revert NotGovernance();
        Proposal storage p = proposals[id];
        if (p.status != Status.Pending) revert NotPending(id);
        if (block.timestamp >= p.expiresAt) revert Expired(p.expiresAt);
        p.status = Status.Cancelled;
        freezes[p.provider].pending -= 1;
        emit SlashCancelled(id);
    }
}
