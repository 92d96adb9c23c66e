// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// Test-only account for CairnStorage's payment rules: forwards any call, and when paid it
/// accepts, refuses (mode 1), or tries to withdraw again from inside the payment (mode 2).
contract Attacker {
    address public immutable target;
    uint8 public mode;
    uint256 public received;
    bytes public reentryError;

    constructor(address target_) {
        target = target_;
    }

    function setMode(uint8 m) external {
        mode = m;
    }

    /// Call the target with `data` (and the value sent here), bubbling up a revert.
    function forward(bytes calldata data) external payable returns (bytes memory ret) {
        bool ok;
        (ok, ret) = target.call{value: msg.value}(data);
        if (!ok) {
            assembly {
                revert(add(ret, 32), mload(ret))
            }
        }
    }

    receive() external payable {
        received += msg.value;
        if (mode == 1) revert("refused");
        if (mode == 2) {
            mode = 0;
            (bool ok, bytes memory err) = target.call(abi.encodeWithSignature("withdraw()"));
            if (!ok) reentryError = err;
        }
    }
}
