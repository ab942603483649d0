// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

// Brings OpenZeppelin's TimelockController into the build, unchanged, so its artifact is
// compiled with the same settings as the rest (contracts/artifacts/TimelockController.json).
import {TimelockController} from "@openzeppelin/contracts/governance/TimelockController.sol";
