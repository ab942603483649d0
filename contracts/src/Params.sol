// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title Ganglion protocol parameters
/// @notice Every tunable of the settlement layer in one place. The owner is the governance
/// TimelockController (itself driven by GanglionGovernor), so a value changes only through a
/// proposal, a vote, the timelock's delay and its execution; any other caller reverts with
/// OwnableUnauthorizedAccount.
/// @dev Fractions are in basis points (1 bp = 1/10_000). Durations are in seconds.
/// Every value is bounded (InvalidParam otherwise), at construction and in every setter:
///   minProviderStake, minCheckerStake ≤ 2^128 − 1 (stakes are uint128 in the Registry);
///   slashFraction 1..10_000; checkerQuorum 1..MAX_QUORUM; protocolFee ≤ 1_000 (10 %);
///   every duration ≤ MAX_DURATION (so `block.timestamp + 2 × duration` cannot wrap the uint64
///   timestamps of the Registry, the Escrow and Slashing); withdrawalDelay, challengeWindow and
///   executionWindow ≥ 1; treasury ≠ 0; and, across parameters,
///   unbondingDelay > challengeWindow + executionWindow (stake asked to unbond after a slash was
///   proposed is still there when the slash may execute). A setter that would break the
///   cross-check reverts, so a governance proposal that moves several of them orders its calls
///   so each intermediate state holds it.
contract Params is Ownable {
    uint256 public constant BPS = 10_000;
    /// Longest duration any parameter may have: 10 years (365-day years), in seconds.
    uint256 public constant MAX_DURATION = 3650 days;
    /// Largest checker quorum (propose and execute loop over the signers).
    uint256 public constant MAX_QUORUM = 100;

    /// Least active stake (token base units, 6 decimals) for a provider to count as staked.
    uint256 public minProviderStake;
    /// Least active stake for a checker to count towards a slashing quorum.
    uint256 public minCheckerStake;
    /// Largest fraction (bps) of a provider's stake one executed slash may take.
    uint256 public slashFraction;
    /// How many distinct staked checkers must sign a slash.
    uint256 public checkerQuorum;
    /// Protocol fee (bps) taken from every redemption, paid to `treasury`.
    uint256 public protocolFee;
    /// Delay between asking to unbond stake (Registry) and withdrawing it.
    uint256 public unbondingDelay;
    /// Delay between a robot asking to withdraw unspent deposit (Escrow) and withdrawing it.
    uint256 public withdrawalDelay;
    /// A proposed slash can execute only once this long has passed since it was proposed.
    uint256 public challengeWindow;
    /// After the challenge window, a slash may be executed during this long; then it expires.
    uint256 public executionWindow;
    /// Receives protocol fees and slashed stake.
    address public treasury;

    struct Init {
        uint256 minProviderStake;
        uint256 minCheckerStake;
        uint256 slashFraction;
        uint256 checkerQuorum;
        uint256 protocolFee;
        uint256 unbondingDelay;
        uint256 withdrawalDelay;
        uint256 challengeWindow;
        uint256 executionWindow;
        address treasury;
    }

    event ParamChanged(bytes32 indexed name, uint256 value);
    event TreasuryChanged(address treasury);

    error InvalidParam(bytes32 name, uint256 value);

    constructor(address owner_, Init memory init) Ownable(owner_) {
        _setMinProviderStake(init.minProviderStake);
        _setMinCheckerStake(init.minCheckerStake);
        _setSlashFraction(init.slashFraction);
        _setCheckerQuorum(init.checkerQuorum);
        _setProtocolFee(init.protocolFee);
        _setUnbondingDelay(init.unbondingDelay);
        _setWithdrawalDelay(init.withdrawalDelay);
        _setChallengeWindow(init.challengeWindow);
        _setExecutionWindow(init.executionWindow);
        _setTreasury(init.treasury);
        _checkDelays("unbondingDelay", init.unbondingDelay);
    }

    function setMinProviderStake(uint256 v) external onlyOwner { _setMinProviderStake(v); }
    function setMinCheckerStake(uint256 v) external onlyOwner { _setMinCheckerStake(v); }
    function setSlashFraction(uint256 v) external onlyOwner { _setSlashFraction(v); }
    function setCheckerQuorum(uint256 v) external onlyOwner { _setCheckerQuorum(v); }
    function setProtocolFee(uint256 v) external onlyOwner { _setProtocolFee(v); }
    function setUnbondingDelay(uint256 v) external onlyOwner {
        _setUnbondingDelay(v);
        _checkDelays("unbondingDelay", v);
    }
    function setWithdrawalDelay(uint256 v) external onlyOwner { _setWithdrawalDelay(v); }
    function setChallengeWindow(uint256 v) external onlyOwner {
        _setChallengeWindow(v);
        _checkDelays("challengeWindow", v);
    }
    function setExecutionWindow(uint256 v) external onlyOwner {
        _setExecutionWindow(v);
        _checkDelays("executionWindow", v);
    }
    function setTreasury(address t) external onlyOwner { _setTreasury(t); }

    /// unbondingDelay > challengeWindow + executionWindow, else InvalidParam(name, value) with
    /// the parameter just set.
    function _checkDelays(bytes32 name, uint256 value) private view {
        if (unbondingDelay <= challengeWindow + executionWindow) revert InvalidParam(name, value);
    }

    function _setMinProviderStake(uint256 v) private {
        if (v > type(uint128).max) revert InvalidParam("minProviderStake", v);
        minProviderStake = v;
        emit ParamChanged("minProviderStake", v);
    }

    function _setMinCheckerStake(uint256 v) private {
        if (v > type(uint128).max) revert InvalidParam("minCheckerStake", v);
        minCheckerStake = v;
        emit ParamChanged("minCheckerStake", v);
    }

    function _setSlashFraction(uint256 v) private {
        if (v == 0 || v > BPS) revert InvalidParam("slashFraction", v);
        slashFraction = v;
        emit ParamChanged("slashFraction", v);
    }

    function _setCheckerQuorum(uint256 v) private {
        if (v == 0 || v > MAX_QUORUM) revert InvalidParam("checkerQuorum", v);
        checkerQuorum = v;
        emit ParamChanged("checkerQuorum", v);
    }

    function _setProtocolFee(uint256 v) private {
        // At most 10 %: a fee is a cut, not a confiscation.
        if (v > BPS / 10) revert InvalidParam("protocolFee", v);
        protocolFee = v;
        emit ParamChanged("protocolFee", v);
    }

    function _setUnbondingDelay(uint256 v) private {
        if (v > MAX_DURATION) revert InvalidParam("unbondingDelay", v);
        unbondingDelay = v;
        emit ParamChanged("unbondingDelay", v);
    }

    function _setWithdrawalDelay(uint256 v) private {
        // 0 would make the withdrawal window empty: a request would lapse as it matures.
        if (v == 0 || v > MAX_DURATION) revert InvalidParam("withdrawalDelay", v);
        withdrawalDelay = v;
        emit ParamChanged("withdrawalDelay", v);
    }

    function _setChallengeWindow(uint256 v) private {
        // 0 would leave no time for the appeal.
        if (v == 0 || v > MAX_DURATION) revert InvalidParam("challengeWindow", v);
        challengeWindow = v;
        emit ParamChanged("challengeWindow", v);
    }

    function _setExecutionWindow(uint256 v) private {
        if (v == 0 || v > MAX_DURATION) revert InvalidParam("executionWindow", v);
        executionWindow = v;
        emit ParamChanged("executionWindow", v);
    }

    function _setTreasury(address t) private {
        if (t == address(0)) revert InvalidParam("treasury", 0);
        treasury = t;
        emit TreasuryChanged(t);
    }
}
