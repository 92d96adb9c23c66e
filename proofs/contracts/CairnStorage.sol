// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title Cairn storage registry: stake, provenance, storage deals, per-epoch proofs, slashing.
/// @notice Byte-level rules (tree, leaf and node hashes, challenge derivation, proof blob) are
/// in proofs/PROOFS.md; the Rust crate `cairn-proofs` mirrors them and is tested against this
/// contract on a real chain.
///
/// Money: every wei the contract holds is a node's stake (bonded or unbonding), a deal's
/// escrow, or an account's unpaid credit (`owed`). `accounted()` returns that sum; it equals
/// the contract's balance after every transaction. Payments go out only through `withdraw`
/// and `withdrawUnbonded` (pull, checks-effects-interactions, reentrancy lock).
///
/// Membership: a node registers with the keccak256 of its libp2p peer id bytes (the `peer`
/// word), bound to its account for good, one to one: other nodes check a peer's membership
/// from its peer id (`memberOfPeer`). A member (`isMember`) is registered with at least
/// `minStake` bonded.
contract CairnStorage {
    // ---------------------------------------------------------------- parameters
    /// Format tag of the proof blob and tree rules this contract verifies.
    uint8 public constant PROOF_FORMAT = 1;
    /// Largest accepted leaf count (2^40 leaves of 128 bytes = 128 TiB per deal).
    uint64 public constant MAX_LEAVES = 1 << 40;
    uint256 public immutable minStake;
    /// Blocks per epoch; epoch e starts at block genesisBlock + e * epochBlocks.
    uint64 public immutable epochBlocks;
    /// Proofs for epoch e are accepted in blocks (start(e), start(e) + proofWindow], within
    /// the epoch (proofWindow < epochBlocks).
    uint64 public immutable proofWindow;
    /// Epochs between a withdrawal request and the withdrawal.
    uint64 public immutable unbondingEpochs;
    /// Wei taken from a node's stake for one missed epoch.
    uint256 public immutable slashAmount;
    /// Share of a slash credited to the reporter, in basis points; the rest to the client.
    uint16 public immutable rewardBps;
    /// Least escrow a proposal carries (epochs * pricePerEpoch), so proposals that make a
    /// node hash its share cost their sender.
    uint256 public immutable minEscrow;
    /// Epochs a proposal may be accepted in, from the one it was made in; after that anyone
    /// may cancel it and the escrow goes back to the client.
    uint64 public immutable proposalEpochs;
    /// Challenged samples per node and epoch (independent of deals and bytes stored), each
    /// drawn over the node's running deals weighted by their leaf counts.
    uint8 public immutable samplesPerEpoch;
    uint64 public immutable genesisBlock;

    // ---------------------------------------------------------------- state
    /// A proof reads the first slot only (is the node in, and its draw's weight).
    struct Node {
        uint128 stake; // bonded (2^128 wei is far beyond any supply of ether)
        uint128 drawWeight; // leaves of the deals in the node's draw tree
        uint256 unbonding;
        uint64 unbondingEpoch; // first epoch in which `unbonding` may be withdrawn
        uint64 lastEnd; // first epoch after every accepted deal
        uint64 appendEpoch; // epoch of the last deal accepted
        uint64 endBefore; // lastEnd before the first deal accepted in appendEpoch
        bool registered;
    }

    /// Packed into four slots; a challenge reads only the first.
    struct Deal {
        bytes16 commitment;
        uint48 leafCount;
        uint40 start; // first epoch proven; 0 until accepted
        uint32 epochs;
        uint8 drawMode; // DRAWN_AS_RUN, DRAWN_ONE_MORE or DRAWN_NEVER
        address node;
        uint32 settled; // epochs settled so far
        uint32 drawSlot; // its 1-based position in its node's draw tree; 0 once pruned
        uint32 proposedEpoch;
        address client;
        uint8 state;
        uint88 pricePerEpoch;
        bytes32 checkpoint;
    }

    uint8 internal constant PROPOSED = 1;
    uint8 internal constant ACTIVE = 2;
    uint8 internal constant CANCELLED = 3;

    /// Drawn in the epochs it runs.
    uint8 internal constant DRAWN_AS_RUN = 0;
    /// Terminated during its last drawn epoch: drawn one epoch past its (cut) end.
    uint8 internal constant DRAWN_ONE_MORE = 1;
    /// Terminated before it started: never drawn.
    uint8 internal constant DRAWN_NEVER = 2;
    /// Low bits of a draw tree position: the deal id at that position (the sum is above).
    uint256 internal constant ID_BITS = 64;

    /// A publisher's record of a checkpoint. The parent is a record too: (parentPublisher,
    /// parent), so a lineage names who published every step and nobody else's record of the
    /// same root can stand in for it.
    struct Record {
        uint64 blockNumber; // the block it was recorded in; 0: no record
        address parentPublisher; // zero for a base checkpoint
        bytes32 parent;
        bytes32 metaHash;
    }

    /// Longest name, in bytes (`org/model`).
    uint256 public constant MAX_NAME_BYTES = 96;
    /// Bytes allowed in a name, as a bit set: ASCII letters, digits, '_', '-', '.' and '/'.
    uint256 internal constant NAME_CHARS = 0x7fffffe87fffffe03ffe00000000000;
    /// '-' and '.': neither first nor last in a segment, nor doubled.
    uint256 internal constant EDGE_CHARS = (1 << 0x2d) | (1 << 0x2e);
    uint256 internal constant SLASH = 0x2f;

    /// What a put records: the caller's record of `root` and, unless empty, a name for it.
    struct Provenance {
        bytes32 root;
        address parentPublisher;
        bytes32 parent;
        bytes32 metaHash;
        string name;
    }

    mapping(address => Node) public nodes;
    mapping(address => uint256[]) internal nodeDeals;
    /// Per node, a Fenwick tree over its deal list (1-based) of the leaf counts of the deals
    /// not pruned yet, each position's sum shifted above the id of the deal at the position
    /// (`ID_BITS`). A deal enters when accepted and leaves when pruned after its end.
    mapping(address => mapping(uint256 => uint256)) internal drawTree;
    mapping(uint256 => Deal) public deals;
    uint256 public dealCount;
    /// Provenance, per publisher: records[publisher][root]. Anyone may record any root; a
    /// record of someone else never blocks or renames a publisher's own.
    mapping(address => mapping(bytes32 => Record)) public records;
    /// The account that owns an org (keccak256 of the org in lower case): the first to name a
    /// checkpoint under it.
    mapping(bytes32 => address) public orgOwner;
    /// Per publisher and name (keccak256 of the name in lower case), the roots it pointed at,
    /// oldest first.
    mapping(address => mapping(bytes32 => bytes32[])) internal nameRoots;
    mapping(address => uint256) public owed;
    /// The peer word an account registered with (zero if it never did); kept after `exit`.
    mapping(address => bytes32) public peerOf;
    /// The account a peer word is bound to (zero if none); kept after `exit`.
    mapping(bytes32 => address) public accountOfPeer;
    mapping(address => mapping(uint256 => uint256)) internal provenBits;
    mapping(address => mapping(uint256 => uint256)) internal slashedBits;

    uint256 public totalStake; // bonded and unbonding
    uint256 public totalEscrow;
    uint256 public totalOwed;
    uint256 private locked = 1;

    // ---------------------------------------------------------------- events
    /// Membership changes only with NodeRegistered, StakeAdded, WithdrawalRequested,
    /// NodeExited and Slashed, each naming the account as its first topic (StakeWithdrawn
    /// pays out unbonding stake and changes no membership, but names the account too).
    event NodeRegistered(address indexed node, uint256 stake, bytes32 indexed peer);
    event StakeAdded(address indexed node, uint256 amount);
    event WithdrawalRequested(address indexed node, uint256 amount, uint64 availableEpoch);
    event StakeWithdrawn(address indexed node, uint256 amount);
    event NodeExited(address indexed node);
    event Published(
        address indexed publisher, bytes32 indexed root, bytes32 indexed parent, address parentPublisher, bytes32 metaHash
    );
    event OrgClaimed(bytes32 indexed org, address indexed owner);
    event Named(address indexed publisher, bytes32 indexed name, bytes32 indexed root, uint256 revision, string text);
    event DealProposed(
        uint256 indexed id,
        address indexed client,
        address indexed node,
        address publisher,
        bytes32 checkpoint,
        bytes16 commitment,
        uint64 leafCount,
        uint32 epochs,
        uint256 pricePerEpoch
    );
    event DealAccepted(uint256 indexed id, address indexed node, uint64 startEpoch, uint64 endEpoch);
    event DealCancelled(uint256 indexed id);
    event DealTerminated(uint256 indexed id, uint64 keptEpochs, uint256 refund);
    event EpochProven(address indexed node, uint64 indexed epoch, uint256 samples);
    event DealSettled(uint256 indexed id, uint64 paidEpochs, uint64 refundedEpochs);
    event Slashed(address indexed node, uint64 indexed epoch, address indexed reporter, uint256 amount, uint256 reward);
    event Withdrawn(address indexed account, uint256 amount);

    // ---------------------------------------------------------------- errors
    error BadParameters();
    error StakeTooLow(uint256 given, uint256 minimum);
    error AlreadyRegistered();
    error ZeroPeer();
    error PeerMismatch(bytes32 bound);
    error PeerTaken(address account);
    error NotRegistered();
    error InsufficientStake(uint256 stake);
    error StillUnbonding(uint64 availableEpoch);
    error NothingToWithdraw();
    error HasActiveDeals(uint64 lastEpoch);
    error ZeroRoot();
    error AlreadyPublished();
    error UnknownParent();
    error UnknownCheckpoint();
    error EscrowTooLow(uint256 minimum);
    error ProposalExpired();
    error BadName();
    error OrgTaken(address owner);
    error InvalidDeal();
    error WrongPayment(uint256 expected);
    error UnknownDeal();
    error NotDealClient();
    error NotDealNode();
    error DealNotProposed();
    error DealNotActive();
    error OutsideProofWindow(uint64 epoch);
    error AlreadyProven();
    error MalformedProof();
    error BadProof(uint256 sample);
    error DrawOpen();
    error DrawExhausted(uint256 sample);
    error EpochNotOver();
    error EpochWasProven();
    error AlreadySlashed();
    error TransferFailed();
    error Reentrancy();

    modifier nonReentrant() {
        if (locked != 1) revert Reentrancy();
        locked = 2;
        _;
        locked = 1;
    }

    constructor(
        uint256 minStake_,
        uint64 epochBlocks_,
        uint64 proofWindow_,
        uint64 unbondingEpochs_,
        uint256 slashAmount_,
        uint16 rewardBps_,
        uint8 samplesPerEpoch_,
        uint256 minEscrow_,
        uint64 proposalEpochs_
    ) {
        // The seed of an epoch is a block hash, readable for 256 blocks only; proofs of an
        // epoch arrive within it, so the deals it samples are fixed when it starts. A prover
        // sees the seed block, then its proof lands in a later one: a window of 2 at least.
        // Stake leaves at the earliest one epoch after the last deal ends, so its last epoch
        // can still be reported.
        if (
            proofWindow_ < 2 || proofWindow_ >= epochBlocks_ || proofWindow_ > 255 || rewardBps_ > 10_000
                || samplesPerEpoch_ == 0 || minStake_ == 0 || slashAmount_ == 0 || unbondingEpochs_ == 0
                || minEscrow_ == 0 || proposalEpochs_ == 0 || proposalEpochs_ > type(uint32).max
        ) revert BadParameters();
        minEscrow = minEscrow_;
        proposalEpochs = proposalEpochs_;
        minStake = minStake_;
        epochBlocks = epochBlocks_;
        proofWindow = proofWindow_;
        unbondingEpochs = unbondingEpochs_;
        slashAmount = slashAmount_;
        rewardBps = rewardBps_;
        samplesPerEpoch = samplesPerEpoch_;
        genesisBlock = uint64(block.number);
    }

    // ---------------------------------------------------------------- time
    function currentEpoch() public view returns (uint64) {
        return uint64((block.number - genesisBlock) / epochBlocks);
    }

    function epochStart(uint64 epoch) public view returns (uint64) {
        return genesisBlock + epoch * epochBlocks;
    }

    /// Seed of an epoch's challenges: the hash of its first block, unknown before it starts.
    function epochSeed(uint64 epoch) public view returns (bytes32) {
        return blockhash(epochStart(epoch));
    }

    // ---------------------------------------------------------------- nodes
    /// Register the caller with `msg.value` (>= minStake) as stake, as the node whose peer
    /// word is `peer`: keccak256 of its libp2p PeerId bytes. The first registration binds the
    /// account and the peer word to each other for good: a later one (after `exit`) must use
    /// the same word (`PeerMismatch`), and a word bound to another account is refused
    /// (`PeerTaken`).
    function register(bytes32 peer) external payable {
        Node storage n = nodes[msg.sender];
        if (n.registered) revert AlreadyRegistered();
        if (msg.value < minStake) revert StakeTooLow(msg.value, minStake);
        if (peer == bytes32(0)) revert ZeroPeer();
        bytes32 bound = peerOf[msg.sender];
        if (bound == bytes32(0)) {
            address holder = accountOfPeer[peer];
            if (holder != address(0)) revert PeerTaken(holder);
            peerOf[msg.sender] = peer;
            accountOfPeer[peer] = msg.sender;
        } else if (bound != peer) {
            revert PeerMismatch(bound);
        }
        n.registered = true;
        n.stake += _stakeOf(msg.value);
        totalStake += msg.value;
        emit NodeRegistered(msg.sender, msg.value, peer);
    }

    /// A member: registered, with at least `minStake` bonded (unbonding stake does not count).
    function isMember(address node) public view returns (bool) {
        Node storage n = nodes[node];
        return n.registered && n.stake >= minStake;
    }

    /// The account bound to a peer word (zero if none) and whether it is a member now.
    function memberOfPeer(bytes32 peer) external view returns (address account, bool member) {
        account = accountOfPeer[peer];
        member = account != address(0) && isMember(account);
    }

    function topUp() external payable {
        Node storage n = nodes[msg.sender];
        if (!n.registered) revert NotRegistered();
        n.stake += _stakeOf(msg.value);
        totalStake += msg.value;
        emit StakeAdded(msg.sender, msg.value);
    }

    /// Move `amount` of bonded stake to unbonding. While deals are running the bonded stake
    /// stays at least `minStake`. Unbonding stake can still be slashed.
    function requestWithdrawal(uint256 amount) external {
        Node storage n = nodes[msg.sender];
        if (!n.registered) revert NotRegistered();
        if (amount == 0 || amount > n.stake) revert InsufficientStake(n.stake);
        uint64 now_ = currentEpoch();
        if (now_ < n.lastEnd && n.stake - amount < minStake) revert StakeTooLow(n.stake - amount, minStake);
        _unbond(n, amount, now_);
    }

    /// Leave the registry: all stake starts unbonding. Only once every deal has ended.
    function exit() external {
        Node storage n = nodes[msg.sender];
        if (!n.registered) revert NotRegistered();
        uint64 now_ = currentEpoch();
        if (now_ < n.lastEnd) revert HasActiveDeals(n.lastEnd);
        n.registered = false;
        if (n.stake > 0) _unbond(n, n.stake, now_);
        emit NodeExited(msg.sender);
    }

    /// `value` as bonded stake (128 bits, far beyond any supply of ether; refused above).
    function _stakeOf(uint256 value) internal pure returns (uint128) {
        if (value > type(uint128).max) revert WrongPayment(type(uint128).max);
        return uint128(value);
    }

    function _unbond(Node storage n, uint256 amount, uint64 now_) internal {
        n.stake -= uint128(amount); // amount <= stake
        n.unbonding += amount;
        n.unbondingEpoch = now_ + unbondingEpochs;
        emit WithdrawalRequested(msg.sender, amount, n.unbondingEpoch);
    }

    function withdrawUnbonded() external nonReentrant {
        Node storage n = nodes[msg.sender];
        uint256 amount = n.unbonding;
        if (amount == 0) revert NothingToWithdraw();
        if (currentEpoch() < n.unbondingEpoch) revert StillUnbonding(n.unbondingEpoch);
        n.unbonding = 0;
        totalStake -= amount;
        emit StakeWithdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    /// Pay out everything credited to the caller (deal payments, slash rewards, refunds).
    function withdraw() external nonReentrant {
        uint256 amount = owed[msg.sender];
        if (amount == 0) revert NothingToWithdraw();
        owed[msg.sender] = 0;
        totalOwed -= amount;
        emit Withdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    function _send(address to, uint256 amount) internal {
        (bool ok,) = payable(to).call{value: amount}("");
        if (!ok) revert TransferFailed();
    }

    // ---------------------------------------------------------------- provenance
    /// Record a checkpoint (the 32-byte BLAKE3 digest of its root CID) as the caller's, with
    /// its parent (`parentPublisher`'s record of `parent`; both zero for a base checkpoint)
    /// and a metadata hash. Records are append-only; each publisher has its own.
    function publish(bytes32 root, address parentPublisher, bytes32 parent, bytes32 metaHash) external {
        _publish(root, parentPublisher, parent, metaHash);
    }

    /// Publish, or accept that the caller already published `root` with this parent (a re-put
    /// adds deals); the caller's record with another parent is refused.
    function _publishOrOwn(bytes32 root, address parentPublisher, bytes32 parent, bytes32 metaHash) internal {
        Record storage r = records[msg.sender][root];
        if (r.blockNumber == 0) _publish(root, parentPublisher, parent, metaHash);
        else if (r.parent != parent || r.parentPublisher != parentPublisher) revert AlreadyPublished();
    }

    function _publish(bytes32 root, address parentPublisher, bytes32 parent, bytes32 metaHash) internal {
        if (root == bytes32(0)) revert ZeroRoot();
        if (records[msg.sender][root].blockNumber != 0) revert AlreadyPublished();
        if ((parent == bytes32(0)) != (parentPublisher == address(0))) revert UnknownParent();
        if (parent != bytes32(0) && records[parentPublisher][parent].blockNumber == 0) revert UnknownParent();
        records[msg.sender][root] = Record(uint64(block.number), parentPublisher, parent, metaHash);
        emit Published(msg.sender, root, parent, parentPublisher, metaHash);
    }

    /// Point the caller's name `org/model` at its record of `root`, as the name's next
    /// revision. The first publisher to name anything under an org owns the org; names under
    /// it are refused to anyone else (`OrgTaken`). Orgs and names are compared in lower case.
    function setName(string calldata name, bytes32 root) external {
        if (records[msg.sender][root].blockNumber == 0) revert UnknownCheckpoint();
        _name(name, root);
    }

    /// The owner of `name`'s org (zero: nobody named anything under it), how many revisions
    /// its `name` has, and the roots it pointed at, oldest first, from revision `from`
    /// (0-based), at most `max` of them.
    function nameHistory(string calldata name, uint256 from, uint256 max)
        external
        view
        returns (address publisher, uint256 revisions, bytes32[] memory roots)
    {
        (bytes32 org, bytes32 key) = _nameKeys(name);
        publisher = orgOwner[org];
        bytes32[] storage all = nameRoots[publisher][key];
        revisions = all.length;
        uint256 n = from >= revisions ? 0 : revisions - from;
        if (n > max) n = max;
        roots = new bytes32[](n);
        for (uint256 i = 0; i < n; i++) {
            roots[i] = all[from + i];
        }
    }

    function _name(string calldata name, bytes32 root) internal {
        (bytes32 org, bytes32 key) = _nameKeys(name);
        address owner = orgOwner[org];
        if (owner == address(0)) {
            orgOwner[org] = msg.sender;
            emit OrgClaimed(org, msg.sender);
        } else if (owner != msg.sender) {
            revert OrgTaken(owner);
        }
        bytes32[] storage roots = nameRoots[msg.sender][key];
        // Naming the root the name already points at (a re-put) adds no revision.
        if (roots.length != 0 && roots[roots.length - 1] == root) return;
        roots.push(root);
        emit Named(msg.sender, key, root, roots.length, name);
    }

    /// Check `org/model` (the rules of proofs/PROOFS.md: 1 to 96 bytes, two segments of ASCII
    /// letters, digits, '-', '_' and '.', neither starting nor ending with '-' or '.', no
    /// "--" or "..") and return the keccak256 of its org and of itself, in lower case.
    function _nameKeys(string calldata name) internal pure returns (bytes32 org, bytes32 key) {
        bytes calldata b = bytes(name);
        if (b.length == 0 || b.length > MAX_NAME_BYTES) revert BadName();
        bytes memory lower = new bytes(b.length);
        uint256 slash = 0; // position of the '/', 0 until seen
        uint256 prev = SLASH;
        for (uint256 i = 0; i < b.length; i++) {
            uint256 c = uint8(b[i]);
            if ((NAME_CHARS >> c) & 1 == 0) revert BadName();
            if (c == SLASH) {
                // One slash, after a segment that does not end in '-' or '.'.
                if (slash != 0 || i == 0 || (EDGE_CHARS >> prev) & 1 != 0) revert BadName();
                slash = i;
            } else if ((EDGE_CHARS >> c) & 1 != 0) {
                // Not first in a segment, not doubled.
                if (prev == SLASH || prev == c) revert BadName();
            } else if (c >= 0x41 && c <= 0x5a) {
                c += 0x20; // 'A'..'Z' to lower case
            }
            lower[i] = bytes1(uint8(c));
            prev = c;
        }
        if (slash == 0 || prev == SLASH || (EDGE_CHARS >> prev) & 1 != 0) revert BadName();
        key = keccak256(lower);
        assembly ("memory-safe") {
            org := keccak256(add(lower, 32), slash)
        }
    }

    /// Publish a checkpoint, name it (unless `name` is empty) and propose one deal per storing
    /// node in one transaction (what a put does); if the caller already published it with
    /// this parent, only the name and the deals. `msg.value` pays every deal:
    /// nodes.length * epochs * pricePerEpoch.
    function publishWithDeals(
        Provenance calldata p,
        address[] calldata nodes_,
        bytes16[] calldata commitments,
        uint64[] calldata leafCounts,
        uint32 epochs,
        uint88 pricePerEpoch
    ) external payable returns (uint256 firstId) {
        if (nodes_.length != commitments.length || nodes_.length != leafCounts.length) revert InvalidDeal();
        _publishOrOwn(p.root, p.parentPublisher, p.parent, p.metaHash);
        if (bytes(p.name).length != 0) _name(p.name, p.root);
        uint256 total = nodes_.length * uint256(epochs) * pricePerEpoch;
        if (msg.value != total) revert WrongPayment(total);
        firstId = dealCount + 1;
        for (uint256 i = 0; i < nodes_.length; i++) {
            _propose(nodes_[i], msg.sender, p.root, commitments[i], leafCounts[i], epochs, pricePerEpoch);
        }
    }

    // ---------------------------------------------------------------- deals
    /// Escrow `epochs * pricePerEpoch` for `node` to hold the data committed to by
    /// `commitment` (tree root over `leafCount` 128-byte leaves) of `publisher`'s checkpoint.
    function proposeDeal(
        address node,
        address publisher,
        bytes32 checkpoint,
        bytes16 commitment,
        uint64 leafCount,
        uint32 epochs,
        uint88 pricePerEpoch
    ) external payable returns (uint256 id) {
        uint256 total = uint256(epochs) * pricePerEpoch;
        if (msg.value != total) revert WrongPayment(total);
        id = _propose(node, publisher, checkpoint, commitment, leafCount, epochs, pricePerEpoch);
    }

    function _propose(
        address node,
        address publisher,
        bytes32 checkpoint,
        bytes16 commitment,
        uint64 leafCount,
        uint32 epochs,
        uint88 pricePerEpoch
    ) internal returns (uint256 id) {
        if (!nodes[node].registered) revert NotRegistered();
        if (records[publisher][checkpoint].blockNumber == 0) revert UnknownCheckpoint();
        if (leafCount == 0 || leafCount > MAX_LEAVES || epochs == 0 || pricePerEpoch == 0) revert InvalidDeal();
        if (uint256(epochs) * pricePerEpoch < minEscrow) revert EscrowTooLow(minEscrow);
        id = ++dealCount;
        deals[id] = Deal(
            commitment,
            uint48(leafCount),
            0,
            epochs,
            DRAWN_AS_RUN,
            node,
            0,
            0,
            uint32(currentEpoch()),
            msg.sender,
            PROPOSED,
            pricePerEpoch,
            checkpoint
        );
        totalEscrow += uint256(epochs) * pricePerEpoch;
        emit DealProposed(id, msg.sender, node, publisher, checkpoint, commitment, leafCount, epochs, pricePerEpoch);
    }

    /// The client takes back a deal the node has not accepted; once the proposal has expired,
    /// anyone may, and the escrow goes to the client all the same.
    function cancelDeal(uint256 id) external {
        Deal storage d = _deal(id);
        if (d.state != PROPOSED) revert DealNotProposed();
        if (d.client != msg.sender && !_expired(d)) revert NotDealClient();
        d.state = CANCELLED;
        uint256 total = uint256(d.epochs) * d.pricePerEpoch;
        totalEscrow -= total;
        _credit(d.client, total);
        emit DealCancelled(id);
    }

    /// The client ends a running deal (it deletes the checkpoint): the deal keeps the epochs
    /// before the current one (and any already settled), so nothing from the current epoch
    /// on is challenged or can be reported missed, and the escrow of the epochs cut is
    /// refunded to the client at once. The kept epochs are settled as usual.
    function terminateDeal(uint256 id) external {
        Deal storage d = _deal(id);
        if (d.client != msg.sender) revert NotDealClient();
        if (d.state != ACTIVE) revert DealNotActive();
        uint64 now_ = currentEpoch();
        uint64 keep = now_ > d.start ? now_ - d.start : 0;
        if (keep < d.settled) keep = d.settled;
        if (keep >= d.epochs) revert DealNotActive();
        uint256 refund = uint256(d.epochs - keep) * d.pricePerEpoch;
        d.epochs = uint32(keep);
        // Drawn to the end of the current epoch (samples falling on it are void), so the draw
        // of an epoch never changes once it has started; never drawn if it had not started.
        if (now_ < d.start) d.drawMode = DRAWN_NEVER;
        else if (uint64(d.start) + keep == now_) d.drawMode = DRAWN_ONE_MORE;
        totalEscrow -= refund;
        _credit(d.client, refund);
        emit DealTerminated(id, keep, refund);
    }

    /// Whether a proposal can no longer be accepted.
    function _expired(Deal storage d) internal view returns (bool) {
        return currentEpoch() >= uint64(d.proposedEpoch) + proposalEpochs;
    }

    /// The node agrees to prove the deal from the next epoch on. Only after this can a
    /// challenge hit it or a missed epoch be reported.
    function acceptDeal(uint256 id) external {
        Deal storage d = _deal(id);
        if (d.node != msg.sender) revert NotDealNode();
        if (d.state != PROPOSED) revert DealNotProposed();
        if (_expired(d)) revert ProposalExpired();
        Node storage n = nodes[msg.sender];
        if (!n.registered) revert NotRegistered();
        if (n.stake < minStake) revert StakeTooLow(n.stake, minStake);
        uint64 now_ = currentEpoch();
        // The draw of the current epoch must not change while its proof is open: a node
        // seeing the seed could otherwise shape its draw away from data it lost.
        if (!_drawClosed(msg.sender, now_)) revert DrawOpen();
        if (n.appendEpoch != now_) {
            n.appendEpoch = now_;
            n.endBefore = n.lastEnd;
        }
        uint256[] storage list = nodeDeals[msg.sender];
        list.push(id);
        uint256 slot = list.length;
        // Append to the Fenwick tree: the new position covers its range below it, plus itself.
        mapping(uint256 => uint256) storage tree = drawTree[msg.sender];
        uint256 sum = d.leafCount;
        uint256 low = slot & (~slot + 1);
        for (uint256 k = slot - 1; k > slot - low; k -= k & (~k + 1)) {
            sum += tree[k] >> ID_BITS;
        }
        tree[slot] = (sum << ID_BITS) | id;
        n.drawWeight += uint128(d.leafCount);
        d.drawSlot = uint32(slot);
        d.state = ACTIVE;
        d.start = uint40(now_ + 1);
        uint64 end = uint64(d.start) + d.epochs;
        if (end > n.lastEnd) n.lastEnd = end;
        emit DealAccepted(id, msg.sender, d.start, end);
    }

    /// Pay the node for proven epochs and refund the client for the others, for up to
    /// `maxEpochs` finished epochs of the deal. Anyone may call.
    function settle(uint256 id, uint64 maxEpochs) external {
        Deal storage d = _deal(id);
        if (d.state != ACTIVE) revert DealNotActive();
        uint64 from = d.settled;
        uint64 upto = d.epochs;
        uint64 now_ = currentEpoch();
        // Epochs whose proof window has closed.
        uint64 finished = block.number > epochStart(now_) + proofWindow ? now_ + 1 : now_;
        if (finished <= d.start) return;
        if (finished - d.start < upto) upto = finished - d.start;
        if (upto - from > maxEpochs) upto = from + maxEpochs;
        if (upto <= from) return;
        uint64 paid;
        for (uint64 i = from; i < upto; i++) {
            if (isProven(d.node, uint64(d.start) + i)) paid++;
        }
        uint64 count = upto - from;
        d.settled = uint32(upto);
        totalEscrow -= uint256(count) * d.pricePerEpoch;
        if (paid > 0) _credit(d.node, uint256(paid) * d.pricePerEpoch);
        if (count > paid) _credit(d.client, uint256(count - paid) * d.pricePerEpoch);
        emit DealSettled(id, paid, count - paid);
    }

    function _credit(address to, uint256 amount) internal {
        owed[to] += amount;
        totalOwed += amount;
    }

    function _deal(uint256 id) internal view returns (Deal storage d) {
        d = deals[id];
        if (d.state == 0) revert UnknownDeal();
    }

    function dealsOf(address node) external view returns (uint256[] memory) {
        return nodeDeals[node];
    }

    // ---------------------------------------------------------------- the draw and proofs
    /// Attempts per sample: a sample falling on a deal out of the draw (ended, or accepted
    /// and not started) is drawn again, up to this many times.
    uint256 internal constant DRAW_ATTEMPTS = 32;

    /// Whether `node`'s draw tree may change now: in the epoch's first block (whose hash, the
    /// seed, nobody sending to it knows), once its current epoch is proven or its proof window
    /// is over, or when nothing it accepted before this epoch still runs.
    function _drawClosed(address node, uint64 now_) internal view returns (bool) {
        uint256 start = epochStart(now_);
        if (block.number == start || block.number > start + proofWindow || isProven(node, now_)) return true;
        Node storage n = nodes[node];
        return (n.appendEpoch == now_ ? n.endBefore : n.lastEnd) <= now_;
    }

    /// Take the deals at `slots` (1-based positions in `node`'s deal list) that are drawn in
    /// no epoch from the next on out of its draw tree; others are skipped. Anyone may call,
    /// once the node's current draw is closed (see `acceptDeal`).
    function prune(address node, uint256[] calldata slots) external returns (uint256 pruned) {
        uint64 now_ = currentEpoch();
        if (!_drawClosed(node, now_)) revert DrawOpen();
        uint256[] storage list = nodeDeals[node];
        mapping(uint256 => uint256) storage tree = drawTree[node];
        uint256 len = list.length;
        uint256 removed;
        for (uint256 c; c < slots.length; ++c) {
            uint256 slot = slots[c];
            if (slot == 0 || slot > len) continue;
            Deal storage d = deals[list[slot - 1]];
            if (d.drawSlot != slot || _drawEnd(d) > now_ + 1) continue;
            uint256 w = d.leafCount;
            for (uint256 i = slot; i <= len; i += i & (~i + 1)) {
                tree[i] -= w << ID_BITS;
            }
            removed += w;
            d.drawSlot = 0;
            ++pruned;
        }
        nodes[node].drawWeight -= uint128(removed);
    }

    /// First epoch in which `d` is no longer drawn.
    function _drawEnd(Deal storage d) internal view returns (uint64) {
        uint8 mode = d.drawMode;
        uint64 start = d.start;
        if (mode == DRAWN_NEVER) return start;
        return start + d.epochs + (mode == DRAWN_ONE_MORE ? 1 : 0);
    }

    /// The deal that `x` (below the tree's total) falls on in `node`'s draw tree, and the leaf
    /// within it. The position found was read on the way down (its id costs no cold read).
    function _drawFind(address node, uint256 x) internal view returns (uint256 id, uint256 leaf) {
        mapping(uint256 => uint256) storage tree = drawTree[node];
        uint256 len = nodeDeals[node].length;
        uint256 pos;
        for (uint256 step = 1 << (_depth(uint64(len) + 1) - 1); step != 0; step >>= 1) {
            uint256 next = pos + step;
            if (next <= len) {
                uint256 v = tree[next] >> ID_BITS;
                if (v <= x) {
                    pos = next;
                    x -= v;
                }
            }
        }
        id = uint64(tree[pos + 1]);
        leaf = x;
    }

    /// Sample `j` of `node` in `epoch` over a tree of `total` leaves: the first attempt that
    /// falls on a deal drawn in `epoch`.
    function _drawSample(address node, bytes32 seed, uint64 epoch, uint256 j, uint256 total)
        internal
        view
        returns (uint256 id, uint256 leaf)
    {
        for (uint256 a; a < DRAW_ATTEMPTS; ++a) {
            (id, leaf) = _drawFind(node, _sampleValue(seed, node, epoch, j, a) % total);
            Deal storage d = deals[id];
            if (epoch >= d.start && epoch < _drawEnd(d)) return (id, leaf);
        }
        revert DrawExhausted(j);
    }

    /// Sample `j` of `node` in `epoch`: the deal it falls on (0 when it falls on a deal
    /// terminated in that epoch, or the node has nothing to draw from) and the leaf index.
    /// Exact for the current epoch (the draw tree changes only once its proof is closed).
    function challenge(address node, uint64 epoch, uint256 j) public view returns (uint256 dealId, uint64 leaf) {
        uint256 total = nodes[node].drawWeight;
        if (total == 0) return (0, 0);
        uint256 x;
        (dealId, x) = _drawSample(node, epochSeed(epoch), epoch, j, total);
        Deal storage d = deals[dealId];
        if (epoch >= uint64(d.start) + d.epochs) return (0, 0);
        leaf = uint64(x);
    }

    /// sha256(seed || node || epoch (8 bytes) || j (1 byte) || attempt (1 byte)), in scratch
    /// memory.
    function _sampleValue(bytes32 seed, address node, uint64 epoch, uint256 j, uint256 attempt)
        internal
        view
        returns (uint256 r)
    {
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, seed)
            mstore(add(ptr, 32), shl(96, node))
            mstore(add(ptr, 52), shl(192, epoch))
            mstore8(add(ptr, 60), j)
            mstore8(add(ptr, 61), attempt)
            if iszero(staticcall(gas(), 2, ptr, 62, ptr, 32)) { revert(0, 0) }
            r := mload(ptr)
        }
    }

    /// Prove `epoch` for the caller: for every sample that falls on a running deal, in sample
    /// order, the 128-byte leaf followed by its tree path (16-byte siblings, bottom up).
    function submitProofs(uint64 epoch, bytes calldata blob) external {
        if (block.number <= epochStart(epoch) || block.number > epochStart(epoch) + proofWindow) {
            revert OutsideProofWindow(epoch);
        }
        if (isProven(msg.sender, epoch)) revert AlreadyProven();
        uint256 used = _verifyAll(msg.sender, epoch, blob);
        provenBits[msg.sender][epoch >> 8] |= 1 << (epoch & 255);
        emit EpochProven(msg.sender, epoch, used);
    }

    /// `challenge` for every sample, checking each proof in the blob as it goes.
    function _verifyAll(address node, uint64 epoch, bytes calldata blob) internal view returns (uint256 used) {
        Node storage n = nodes[node];
        // A node slashed below the minimum stake is out until it tops up: no proof is taken,
        // so its deals' epochs go back to their clients (and its misses are still slashed:
        // falling below the minimum is no way out).
        uint256 stake = n.stake;
        if (stake < minStake) revert StakeTooLow(stake, minStake);
        uint256 total = n.drawWeight;
        uint256 offset;
        if (total != 0) {
            bytes32 seed = epochSeed(epoch);
            uint256 samples = samplesPerEpoch;
            for (uint256 j; j < samples; ++j) {
                (uint256 id, uint256 leaf) = _drawSample(node, seed, epoch, j, total);
                Deal storage d = deals[id];
                if (epoch >= uint64(d.start) + d.epochs) continue; // terminated in this epoch
                offset = _checkSample(blob, offset, d, leaf, j);
                ++used;
            }
        }
        if (offset != blob.length) revert MalformedProof();
    }

    /// Check the proof of sample `j` (leaf `leaf` of deal `d`) at `offset` of the blob; the
    /// offset after it.
    function _checkSample(bytes calldata blob, uint256 offset, Deal storage d, uint256 leaf, uint256 j)
        internal
        view
        returns (uint256 end)
    {
        uint256 depth = _depth(d.leafCount);
        end = offset + LEAF_SIZE + depth * 16;
        if (blob.length < end) revert MalformedProof();
        if (!_verifyOne(blob[offset:end], leaf, depth, d.commitment)) revert BadProof(j);
    }

    /// Bytes of a leaf.
    uint256 internal constant LEAF_SIZE = 128;
    /// Inner nodes of height 1..SHA_LEVELS hash with SHA-256, higher ones with Keccak-256.
    uint256 internal constant SHA_LEVELS = 3;

    /// Hash the leaf and its path in scratch memory (no allocation per level): SHA-256 (the
    /// precompile) for the leaf and the lowest SHA_LEVELS levels, Keccak-256 above.
    function _verifyOne(bytes calldata p, uint256 index, uint256 depth, bytes16 root) internal view returns (bool ok) {
        assembly ("memory-safe") {
            let high := not(sub(shl(128, 1), 1))
            let ptr := mload(0x40)
            mstore8(ptr, 0x00)
            calldatacopy(add(ptr, 1), p.offset, LEAF_SIZE)
            if iszero(staticcall(gas(), 2, ptr, add(LEAF_SIZE, 1), ptr, 32)) { revert(0, 0) }
            let h := and(mload(ptr), high)
            let sibs := add(p.offset, LEAF_SIZE)
            for { let i := 0 } lt(i, depth) { i := add(i, 1) } {
                let sib := and(calldataload(add(sibs, shl(4, i))), high)
                switch and(index, 1)
                case 0 {
                    mstore(add(ptr, 1), h)
                    mstore(add(ptr, 17), sib)
                }
                default {
                    mstore(add(ptr, 1), sib)
                    mstore(add(ptr, 17), h)
                }
                mstore8(ptr, 0x01)
                switch lt(i, SHA_LEVELS)
                case 1 {
                    if iszero(staticcall(gas(), 2, ptr, 33, ptr, 32)) { revert(0, 0) }
                    h := and(mload(ptr), high)
                }
                default { h := and(keccak256(ptr, 33), high) }
                index := shr(1, index)
            }
            ok := eq(h, and(root, high))
        }
    }

    /// ceil(log2(leafCount)) for 1 <= leafCount <= 2^40: the bit length of leafCount - 1.
    function _depth(uint64 leafCount) internal pure returns (uint256 d) {
        assembly {
            let x := sub(leafCount, 1)
            d := shl(5, gt(x, 0xffffffff))
            x := shr(d, x)
            let s := shl(4, gt(x, 0xffff))
            x := shr(s, x)
            d := or(d, s)
            s := shl(3, gt(x, 0xff))
            x := shr(s, x)
            d := or(d, s)
            s := shl(2, gt(x, 0xf))
            x := shr(s, x)
            d := or(d, s)
            s := shl(1, gt(x, 0x3))
            x := shr(s, x)
            d := or(d, s)
            d := add(d, sub(x, and(shr(1, x), x)))
        }
    }

    function isProven(address node, uint64 epoch) public view returns (bool) {
        return provenBits[node][epoch >> 8] & (1 << (epoch & 255)) != 0;
    }

    function isSlashed(address node, uint64 epoch) public view returns (bool) {
        return slashedBits[node][epoch >> 8] & (1 << (epoch & 255)) != 0;
    }

    // ---------------------------------------------------------------- missed epochs
    /// Report that `node` did not prove `epoch`, in which its deal `dealId` was running.
    /// The node loses up to `slashAmount` (bonded stake first, then unbonding); the reporter
    /// is credited `rewardBps` of it and the deal's client the rest. Once per node and epoch.
    function reportMissed(address node, uint64 epoch, uint256 dealId) external {
        Deal storage d = _deal(dealId);
        if (d.node != node) revert NotDealNode();
        if (d.start == 0 || epoch < d.start || epoch >= uint64(d.start) + d.epochs) revert DealNotActive();
        if (block.number <= epochStart(epoch) + proofWindow) revert EpochNotOver();
        if (isProven(node, epoch)) revert EpochWasProven();
        if (isSlashed(node, epoch)) revert AlreadySlashed();
        slashedBits[node][epoch >> 8] |= 1 << (epoch & 255);
        Node storage n = nodes[node];
        uint256 amount = slashAmount;
        if (amount > n.stake + n.unbonding) amount = n.stake + n.unbonding;
        if (amount <= n.stake) {
            n.stake -= uint128(amount);
        } else {
            n.unbonding -= amount - n.stake;
            n.stake = 0;
        }
        totalStake -= amount;
        uint256 reward = amount * rewardBps / 10_000;
        _credit(msg.sender, reward);
        _credit(d.client, amount - reward);
        emit Slashed(node, epoch, msg.sender, amount, reward);
    }

    // ---------------------------------------------------------------- accounting
    /// Sum of all stakes, escrows and unpaid credits: equals address(this).balance.
    function accounted() external view returns (uint256) {
        return totalStake + totalEscrow + totalOwed;
    }
}
