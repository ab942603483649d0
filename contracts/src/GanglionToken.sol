// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {ERC20Votes} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Votes.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";

/// @title Ganglion test token
/// @notice ERC20 with votes (ERC20Votes + ERC20Permit), 6 decimals: one base unit is one
/// micro-token, the unit of a voucher's `cumulative` (crates/ganglion-types MicroTokens).
/// The whole supply is minted at deployment to a list the deployer chooses; there is no
/// mint function afterwards.
contract GanglionToken is ERC20, ERC20Permit, ERC20Votes {
    error LengthMismatch();

    constructor(address[] memory holders, uint256[] memory amounts)
        ERC20("Ganglion Test Token", "GNGL")
        ERC20Permit("Ganglion Test Token")
    {
        if (holders.length != amounts.length) revert LengthMismatch();
        for (uint256 i = 0; i < holders.length; i++) {
            _mint(holders[i], amounts[i]);
        }
    }

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    function _update(address from, address to, uint256 value) internal override(ERC20, ERC20Votes) {
        super._update(from, to, value);
    }

    function nonces(address owner) public view override(ERC20Permit, Nonces) returns (uint256) {
        return super.nonces(owner);
    }
}
