// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {Params} from "./Params.sol";

/// @title Ganglion escrow: robots fund one channel per provider, providers redeem vouchers
/// @notice Voucher format (stable; crates/ganglion-types/src/pay/voucher.rs signs it):
///   domain  EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)
///           name "Ganglion", version "1", the chain id, this contract's address
///   voucher Voucher(address robot,address provider,uint64 session,uint256 cumulative)
///           cumulative: token base units (6 decimals: micro-tokens) the robot owes the provider
///           for the whole session so far
///   signature 65 bytes r ‖ s ‖ v, v 27 or 28, s in the lower half of the order (ECDSA.recover
///           reverts on anything else)
/// Channels: a deposit funds the channel robot → provider, and a voucher (robot, provider, ...)
/// draws only from that channel. So a robot cannot promise the same tokens to two providers, nor
/// drain what it owes one provider with a voucher to another address (one it controls): each
/// provider is paid only from the channel that names it, and can see on chain how much it holds.
/// Redeeming pays only `cumulative` minus what was already paid for (robot, provider, session),
/// so a replayed or older voucher pays nothing (it does not revert: resubmitting is harmless).
/// A voucher whose increase exceeds the channel's balance is refused whole, never paid in part
/// (`redeem` reverts; `redeemBatch` skips it and goes on with the rest).
/// Withdrawal: the robot asks `requestWithdrawal(provider, amount)`; the request matures after
/// `params.withdrawalDelay()` and may be used by `withdraw(provider)` during the following
/// `params.withdrawalDelay()` (the withdrawal window, fixed at the request); after that it LAPSES
/// and a new request (with a new delay) is needed. So a matured request cannot be kept as a
/// standing threat to pull the balance out from under a provider at any moment. While a request
/// is pending (requested, not lapsed) `redeemable` reports `covered` against the balance minus
/// the requested amount, though redemptions still draw on the whole balance until it is withdrawn.
contract Escrow is EIP712 {
    using SafeERC20 for IERC20;

    bytes32 public constant VOUCHER_TYPEHASH =
        keccak256("Voucher(address robot,address provider,uint64 session,uint256 cumulative)");

    struct Voucher {
        address robot;
        address provider;
        uint64 session;
        uint256 cumulative;
    }

    struct Channel {
        uint128 balance; // deposited and not yet redeemed or withdrawn
        uint128 pending; // asked to withdraw (still redeemable until withdrawn)
        uint64 withdrawAt; // when `pending` may be withdrawn
        uint64 lapseAt; // when the request lapses (withdrawAt + the window)
    }

    /// Why `redeemBatch` skipped a voucher.
    enum SkipReason {
        BadSignature,
        Uncovered
    }

    IERC20 public immutable token;
    Params public immutable params;

    mapping(address robot => mapping(address provider => Channel)) public channels;
    /// What has been paid so far per keccak256(abi.encode(robot, provider, session)).
    mapping(bytes32 key => uint256) public redeemed;

    event Deposited(address indexed robot, address indexed provider, address from, uint256 amount);
    event Redeemed(
        address indexed robot, address indexed provider, uint64 indexed session, uint256 cumulative, uint256 paid, uint256 fee
    );
    event Skipped(address indexed robot, address indexed provider, uint64 indexed session, SkipReason reason);
    event WithdrawalRequested(
        address indexed robot, address indexed provider, uint256 amount, uint64 withdrawAt, uint64 lapseAt
    );
    event Withdrawn(address indexed robot, address indexed provider, uint256 amount);

    error BadSigner(address signer, address robot);
    error InsufficientDeposit(address robot, uint256 needed, uint256 available);
    error LengthMismatch();
    error NothingPending();
    error TooEarly(uint64 withdrawAt);
    error Lapsed(uint64 lapseAt);
    error ZeroAmount();
    error ZeroAddress();
    error AmountTooLarge();

    constructor(IERC20 token_, Params params_) EIP712("Ganglion", "1") {
        token = token_;
        params = params_;
    }

    // --- deposits ---------------------------------------------------------------------------

    /// Deposits `amount` from the caller into the channel `robot` → `provider` (the caller is
    /// usually the robot itself).
    function deposit(address robot, address provider, uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        if (robot == address(0) || provider == address(0)) revert ZeroAddress();
        Channel storage c = channels[robot][provider];
        uint256 b = uint256(c.balance) + amount;
        if (b > type(uint128).max) revert AmountTooLarge();
        c.balance = uint128(b);
        token.safeTransferFrom(msg.sender, address(this), amount);
        emit Deposited(robot, provider, msg.sender, amount);
    }

    /// Asks to withdraw `amount` of the caller's channel to `provider`. It may be withdrawn from
    /// `params.withdrawalDelay()` from now, during a window of the same length; then it lapses.
    /// Until withdrawn the amount stays redeemable, so a provider holding vouchers has time to
    /// redeem them. A new request replaces the previous one and restarts the delay.
    function requestWithdrawal(address provider, uint256 amount) external {
        Channel storage c = channels[msg.sender][provider];
        if (amount == 0) revert ZeroAmount();
        if (amount > c.balance) revert InsufficientDeposit(msg.sender, amount, c.balance);
        uint256 delay = params.withdrawalDelay();
        uint64 at = uint64(block.timestamp + delay);
        uint64 lapse = uint64(block.timestamp + 2 * delay);
        c.pending = uint128(amount);
        c.withdrawAt = at;
        c.lapseAt = lapse;
        emit WithdrawalRequested(msg.sender, provider, amount, at, lapse);
    }

    /// Withdraws the requested amount from the channel to `provider`, or what is left of it
    /// after redemptions; only between the request's maturity and its lapse.
    function withdraw(address provider) external returns (uint256 amount) {
        Channel storage c = channels[msg.sender][provider];
        if (c.pending == 0) revert NothingPending();
        if (block.timestamp < c.withdrawAt) revert TooEarly(c.withdrawAt);
        if (block.timestamp >= c.lapseAt) revert Lapsed(c.lapseAt);
        amount = c.pending < c.balance ? c.pending : c.balance;
        c.balance -= uint128(amount);
        c.pending = 0;
        c.withdrawAt = 0;
        c.lapseAt = 0;
        if (amount > 0) token.safeTransfer(msg.sender, amount);
        emit Withdrawn(msg.sender, provider, amount);
    }

    /// The part of the channel's balance under a live (requested, not lapsed) withdrawal request.
    function pendingWithdrawal(address robot, address provider) public view returns (uint256) {
        Channel storage c = channels[robot][provider];
        if (c.pending == 0 || block.timestamp >= c.lapseAt) return 0;
        return c.pending < c.balance ? c.pending : c.balance;
    }

    // --- vouchers ---------------------------------------------------------------------------

    function sessionKey(address robot, address provider, uint64 session) public pure returns (bytes32) {
        return keccak256(abi.encode(robot, provider, session));
    }

    function voucherDigest(Voucher calldata v) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(abi.encode(VOUCHER_TYPEHASH, v.robot, v.provider, v.session, v.cumulative))
        );
    }

    /// What redeeming `v` would pay now (0 for a replay), and whether the channel covers it with
    /// what is not under a pending withdrawal request (the signature is not checked).
    function redeemable(Voucher calldata v) external view returns (uint256 increase, bool covered) {
        uint256 done = redeemed[sessionKey(v.robot, v.provider, v.session)];
        increase = v.cumulative > done ? v.cumulative - done : 0;
        uint256 free = channels[v.robot][v.provider].balance - pendingWithdrawal(v.robot, v.provider);
        covered = increase <= free;
    }

    /// The protocol fee on a session's cumulative total; a redemption pays
    /// fee(cumulative) − fee(already redeemed), so splitting redemptions does not lower it.
    function feeOn(uint256 cumulative, uint256 feeBps) public pure returns (uint256) {
        return (cumulative * feeBps) / 10_000;
    }

    /// Redeems one voucher: pays the provider the increase since the last redemption of the
    /// session, less the protocol fee (to the treasury). Anyone may submit it; the money goes to
    /// `v.provider`. Reverts on a bad signature or when the channel does not cover the increase.
    function redeem(Voucher calldata v, bytes calldata signature) external returns (uint256 paid) {
        uint256 feeBps = params.protocolFee();
        uint256 fee;
        (paid, fee) = _redeem(v, signature, feeBps, true);
        if (paid == 0) return 0;
        if (paid > fee) token.safeTransfer(v.provider, paid - fee);
        if (fee > 0) token.safeTransfer(params.treasury(), fee);
    }

    /// Redeems many vouchers in one transaction (one per session). A voucher whose signature
    /// does not verify, or whose channel does not cover it, is skipped (`Skipped` event, nothing
    /// booked) and the rest are paid, so one bad voucher cannot block a batch. Consecutive
    /// vouchers to the same provider are paid in one transfer, and the fees in one transfer.
    function redeemBatch(Voucher[] calldata vs, bytes[] calldata signatures) external returns (uint256 total) {
        if (vs.length != signatures.length) revert LengthMismatch();
        uint256 feeBps = params.protocolFee();
        uint256 fees;
        address payee;
        uint256 owed;
        for (uint256 i = 0; i < vs.length; i++) {
            (uint256 paid, uint256 fee) = _redeem(vs[i], signatures[i], feeBps, false);
            if (paid == 0) continue;
            total += paid;
            fees += fee;
            address p = vs[i].provider;
            if (p != payee) {
                if (owed > 0) token.safeTransfer(payee, owed);
                payee = p;
                owed = 0;
            }
            owed += paid - fee;
        }
        if (owed > 0) token.safeTransfer(payee, owed);
        if (fees > 0) token.safeTransfer(params.treasury(), fees);
    }

    /// Checks the voucher and books it; the caller moves the tokens. `strict`: revert on a bad
    /// signature or an uncovered increase; otherwise skip the voucher (return 0).
    function _redeem(Voucher calldata v, bytes calldata signature, uint256 feeBps, bool strict)
        private
        returns (uint256 paid, uint256 fee)
    {
        if (strict) {
            address signer = ECDSA.recover(voucherDigest(v), signature);
            if (signer != v.robot) revert BadSigner(signer, v.robot);
        } else {
            (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(voucherDigest(v), signature);
            if (err != ECDSA.RecoverError.NoError || signer != v.robot || signer == address(0)) {
                emit Skipped(v.robot, v.provider, v.session, SkipReason.BadSignature);
                return (0, 0);
            }
        }
        bytes32 key = sessionKey(v.robot, v.provider, v.session);
        uint256 done = redeemed[key];
        if (v.cumulative <= done) return (0, 0); // replay or older voucher: nothing to pay
        paid = v.cumulative - done;
        Channel storage c = channels[v.robot][v.provider];
        uint256 balance = c.balance;
        if (paid > balance) {
            if (strict) revert InsufficientDeposit(v.robot, paid, balance);
            emit Skipped(v.robot, v.provider, v.session, SkipReason.Uncovered);
            return (0, 0);
        }
        c.balance = uint128(balance - paid);
        redeemed[key] = v.cumulative;
        fee = feeOn(v.cumulative, feeBps) - feeOn(done, feeBps);
        emit Redeemed(v.robot, v.provider, v.session, v.cumulative, paid, fee);
    }
}
