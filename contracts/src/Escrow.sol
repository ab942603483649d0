// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {Params} from "./Params.sol";

/// @title Ganglion escrow: robots deposit, providers redeem vouchers
/// @notice Voucher format (stable; crates/ganglion-types/src/pay/voucher.rs signs it):
///   domain  EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)
///           name "Ganglion", version "1", the chain id, this contract's address
///   voucher Voucher(address robot,address provider,uint64 session,uint256 cumulative)
///           cumulative: token base units (6 decimals: micro-tokens) the robot owes the provider
///           for the whole session so far
///   signature 65 bytes r ‖ s ‖ v, v 27 or 28, s in the lower half of the order (ECDSA.recover
///           reverts on anything else)
/// Redeeming pays only `cumulative` minus what was already paid for (robot, provider, session),
/// so a replayed or older voucher pays nothing (it does not revert: resubmitting is harmless).
/// A voucher whose increase exceeds the robot's deposit is refused whole (revert), never paid in
/// part: a partial payment would mark the session as paid up to `cumulative` while the provider got
/// less, or leave a remainder the robot could withdraw from under a later redemption. A provider
/// checks `redeemable` before redeeming, and stops serving a robot whose deposit runs short.
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

    struct Account {
        uint128 balance; // deposited and not yet redeemed or withdrawn
        uint128 pending; // asked to withdraw (still redeemable until withdrawn)
        uint64 withdrawAt; // when `pending` may be withdrawn
    }

    IERC20 public immutable token;
    Params public immutable params;

    mapping(address robot => Account) public accounts;
    /// What has been paid so far per keccak256(abi.encode(robot, provider, session)).
    mapping(bytes32 key => uint256) public redeemed;

    event Deposited(address indexed robot, address indexed from, uint256 amount);
    event Redeemed(
        address indexed robot, address indexed provider, uint64 indexed session, uint256 cumulative, uint256 paid, uint256 fee
    );
    event WithdrawalRequested(address indexed robot, uint256 amount, uint64 withdrawAt);
    event Withdrawn(address indexed robot, uint256 amount);

    error BadSigner(address signer, address robot);
    error InsufficientDeposit(address robot, uint256 needed, uint256 available);
    error LengthMismatch();
    error NothingPending();
    error TooEarly(uint64 withdrawAt);
    error ZeroAmount();
    error AmountTooLarge();

    constructor(IERC20 token_, Params params_) EIP712("Ganglion", "1") {
        token = token_;
        params = params_;
    }

    // --- deposits ---------------------------------------------------------------------------

    /// Deposits `amount` from the caller into `robot`'s account (usually the caller itself).
    function deposit(address robot, uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        Account storage a = accounts[robot];
        uint256 b = uint256(a.balance) + amount;
        if (b > type(uint128).max) revert AmountTooLarge();
        a.balance = uint128(b);
        token.safeTransferFrom(msg.sender, address(this), amount);
        emit Deposited(robot, msg.sender, amount);
    }

    /// Asks to withdraw `amount` of the caller's deposit after `params.withdrawalDelay()`.
    /// Until then the amount stays redeemable, so a provider holding vouchers has time to redeem
    /// them. A new request replaces the previous one and restarts the delay.
    function requestWithdrawal(uint256 amount) external {
        Account storage a = accounts[msg.sender];
        if (amount == 0) revert ZeroAmount();
        if (amount > a.balance) revert InsufficientDeposit(msg.sender, amount, a.balance);
        uint64 at = uint64(block.timestamp + params.withdrawalDelay());
        a.pending = uint128(amount);
        a.withdrawAt = at;
        emit WithdrawalRequested(msg.sender, amount, at);
    }

    /// Withdraws the requested amount, or what is left of it after redemptions.
    function withdraw() external returns (uint256 amount) {
        Account storage a = accounts[msg.sender];
        if (a.pending == 0) revert NothingPending();
        if (block.timestamp < a.withdrawAt) revert TooEarly(a.withdrawAt);
        amount = a.pending < a.balance ? a.pending : a.balance;
        a.balance -= uint128(amount);
        a.pending = 0;
        a.withdrawAt = 0;
        if (amount > 0) token.safeTransfer(msg.sender, amount);
        emit Withdrawn(msg.sender, amount);
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

    /// What redeeming `v` would pay now (0 for a replay), and whether the deposit covers it.
    function redeemable(Voucher calldata v) external view returns (uint256 increase, bool covered) {
        uint256 done = redeemed[sessionKey(v.robot, v.provider, v.session)];
        increase = v.cumulative > done ? v.cumulative - done : 0;
        covered = increase <= accounts[v.robot].balance;
    }

    /// Redeems one voucher: pays the provider the increase since the last redemption of the
    /// session, less the protocol fee (to the treasury). Anyone may submit it; the money goes to
    /// `v.provider`. Reverts on a bad signature or when the deposit does not cover the increase.
    function redeem(Voucher calldata v, bytes calldata signature) external returns (uint256 paid) {
        uint256 feeBps = params.protocolFee();
        uint256 fee;
        (paid, fee) = _redeem(v, signature, feeBps);
        if (paid == 0) return 0;
        if (paid > fee) token.safeTransfer(v.provider, paid - fee);
        if (fee > 0) token.safeTransfer(params.treasury(), fee);
    }

    /// Redeems many vouchers in one transaction (one per session). All or nothing: any bad
    /// signature or uncovered increase reverts the whole batch. Consecutive vouchers to the same
    /// provider are paid in one transfer, and the fees in one transfer to the treasury.
    function redeemBatch(Voucher[] calldata vs, bytes[] calldata signatures) external returns (uint256 total) {
        if (vs.length != signatures.length) revert LengthMismatch();
        uint256 feeBps = params.protocolFee();
        uint256 fees;
        address payee;
        uint256 owed;
        for (uint256 i = 0; i < vs.length; i++) {
            (uint256 paid, uint256 fee) = _redeem(vs[i], signatures[i], feeBps);
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

    /// Checks the voucher and books it; the caller moves the tokens.
    function _redeem(Voucher calldata v, bytes calldata signature, uint256 feeBps)
        private
        returns (uint256 paid, uint256 fee)
    {
        address signer = ECDSA.recover(voucherDigest(v), signature);
        if (signer != v.robot) revert BadSigner(signer, v.robot);
        bytes32 key = sessionKey(v.robot, v.provider, v.session);
        uint256 done = redeemed[key];
        if (v.cumulative <= done) return (0, 0); // replay or older voucher: nothing to pay
        paid = v.cumulative - done;
        Account storage a = accounts[v.robot];
        uint256 balance = a.balance;
        if (paid > balance) revert InsufficientDeposit(v.robot, paid, balance);
        a.balance = uint128(balance - paid);
        redeemed[key] = v.cumulative;
        fee = (paid * feeBps) / 10_000;
        emit Redeemed(v.robot, v.provider, v.session, v.cumulative, paid, fee);
    }
}
