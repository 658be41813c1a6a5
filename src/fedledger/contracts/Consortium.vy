# pragma version ~=0.4.3
"""
@title fedledger Consortium
@notice Who belongs to the consortium, with which roles and X25519 encryption key, and which training
        tasks the admins approved. Every change needs `threshold` distinct admin approvals, so no single
        admin can add a member or start a task alone.
@dev    The founding members come in batches of at most MAX_BOOTSTRAP: the constructor takes the first
        and a commitment to the rest, `bootstrap` (sent by anyone) the others, each accepted only if
        keccak256(abi_encode(members, names, roles, encKeys, next)) equals the pending commitment. So
        the whole founding set is fixed at deployment, and governance opens once the last batch is in.
"""

# Roles bitmask.
TRAINER: constant(uint8) = 1
AGGREGATOR: constant(uint8) = 2
VALIDATOR: constant(uint8) = 4
ALL_ROLES: constant(uint8) = 7

# Proposal kinds.
ADD_MEMBER: constant(uint8) = 1
REMOVE_MEMBER: constant(uint8) = 2
SET_ROLES: constant(uint8) = 3
ROTATE_KEY: constant(uint8) = 4
APPROVE_TASK: constant(uint8) = 5

MAX_ADMINS: constant(uint256) = 16
MAX_BOOTSTRAP: constant(uint256) = 64

# Roles and the active flag share one slot so `hasRole`, called by TrainingTask on every transaction,
# costs a single SLOAD.
ACTIVE_BIT: constant(uint256) = 256


struct MemberView:
    name: String[64]
    roles: uint8
    encKey: bytes32
    active: bool


struct Profile:
    name: String[64]
    encKey: bytes32


struct Proposal:
    kind: uint8
    proposer: address
    target: address
    name: String[64]
    roles: uint8
    encKey: bytes32
    paramsHash: bytes32
    approvals: uint256
    executed: bool


event MemberAdded:
    member: indexed(address)
    name: String[64]
    roles: uint8
    encKey: bytes32

event MemberRemoved:
    member: indexed(address)

event RolesChanged:
    member: indexed(address)
    roles: uint8

event EncKeyRotated:
    member: indexed(address)
    encKey: bytes32

event ProposalCreated:
    id: indexed(uint256)
    kind: uint8
    proposer: indexed(address)
    target: address
    paramsHash: bytes32

event ProposalApproved:
    id: indexed(uint256)
    admin: indexed(address)
    approvals: uint256

event ProposalExecuted:
    id: indexed(uint256)

event TaskApproved:
    paramsHash: indexed(bytes32)


isAdmin: public(HashMap[address, bool])
threshold: public(uint256)
taskApproved: public(HashMap[bytes32, bool])
memberCount: public(uint256)
proposalCount: public(uint256)
bootstrapPending: public(bytes32)

_admins: DynArray[address, MAX_ADMINS]
_flags: HashMap[address, uint256]
_profiles: HashMap[address, Profile]
_known: HashMap[address, bool]
_memberList: HashMap[uint256, address]
_proposals: HashMap[uint256, Proposal]
_approvedBy: HashMap[uint256, HashMap[address, bool]]


@deploy
def __init__(
    admins: DynArray[address, MAX_ADMINS],
    threshold: uint256,
    members: DynArray[address, MAX_BOOTSTRAP],
    names: DynArray[String[64], MAX_BOOTSTRAP],
    roles: DynArray[uint8, MAX_BOOTSTRAP],
    encKeys: DynArray[bytes32, MAX_BOOTSTRAP],
    bootstrapNext: bytes32,
):
    assert len(admins) >= 1, "no admins"
    assert threshold >= 1 and threshold <= len(admins), "bad threshold"
    for a: address in admins:
        assert a != empty(address), "zero address"
        assert not self.isAdmin[a], "duplicate admin"
        self.isAdmin[a] = True
    self._admins = admins
    self.threshold = threshold
    self._addFounders(members, names, roles, encKeys)
    self.bootstrapPending = bootstrapNext


@external
def bootstrap(
    members: DynArray[address, MAX_BOOTSTRAP],
    names: DynArray[String[64], MAX_BOOTSTRAP],
    roles: DynArray[uint8, MAX_BOOTSTRAP],
    encKeys: DynArray[bytes32, MAX_BOOTSTRAP],
    next: bytes32,
):
    """@notice Add the next batch of founding members committed at deployment."""
    pending: bytes32 = self.bootstrapPending
    assert pending != empty(bytes32), "bootstrap complete"
    assert keccak256(abi_encode(members, names, roles, encKeys, next)) == pending, "batch not committed"
    self.bootstrapPending = next
    self._addFounders(members, names, roles, encKeys)


@internal
def _addFounders(
    members: DynArray[address, MAX_BOOTSTRAP],
    names: DynArray[String[64], MAX_BOOTSTRAP],
    roles: DynArray[uint8, MAX_BOOTSTRAP],
    encKeys: DynArray[bytes32, MAX_BOOTSTRAP],
):
    n: uint256 = len(members)
    assert len(names) == n and len(roles) == n and len(encKeys) == n, "length mismatch"
    for i: uint256 in range(n, bound=MAX_BOOTSTRAP):
        m: address = members[i]
        assert m != empty(address), "zero address"
        assert not self._known[m], "duplicate member"
        assert roles[i] <= ALL_ROLES, "bad roles"
        self._addMember(m, names[i], roles[i], encKeys[i])


# ---------------------------------------------------------------- views

@view
@internal
def _isActive(a: address) -> bool:
    return self._flags[a] & ACTIVE_BIT != 0


@view
@external
def isActive(a: address) -> bool:
    return self._isActive(a)


@view
@external
def hasRole(a: address, role: uint8) -> bool:
    """@notice True when `a` is active and holds every bit of `role`."""
    f: uint256 = self._flags[a]
    r: uint256 = convert(role, uint256)
    return f & ACTIVE_BIT != 0 and f & r == r


@view
@external
def roleState(a: address) -> (bool, uint8):
    """@notice (active, roles) in one call, so callers can tell "not a member" from "wrong role"."""
    f: uint256 = self._flags[a]
    return f & ACTIVE_BIT != 0, convert(f & 255, uint8)


@view
@external
def member(a: address) -> MemberView:
    p: Profile = self._profiles[a]
    f: uint256 = self._flags[a]
    return MemberView(name=p.name, roles=convert(f & 255, uint8), encKey=p.encKey, active=f & ACTIVE_BIT != 0)


@view
@external
def memberAt(i: uint256) -> address:
    assert i < self.memberCount, "index out of range"
    return self._memberList[i]


@view
@external
def admins() -> DynArray[address, MAX_ADMINS]:
    return self._admins


@view
@external
def proposal(proposalId: uint256) -> Proposal:
    assert proposalId >= 1 and proposalId <= self.proposalCount, "unknown proposal"
    return self._proposals[proposalId]


@view
@external
def hasApproved(proposalId: uint256, admin: address) -> bool:
    return self._approvedBy[proposalId][admin]


# ---------------------------------------------------------------- governance

@external
def propose(
    kind: uint8,
    target: address,
    name: String[64],
    roles: uint8,
    encKey: bytes32,
    paramsHash: bytes32,
) -> uint256:
    """@notice Create a proposal; the proposer's approval counts at once."""
    assert self.isAdmin[msg.sender], "not an admin"
    assert self.bootstrapPending == empty(bytes32), "bootstrap incomplete"
    self._validate(kind, target, roles, encKey, paramsHash)
    pid: uint256 = self.proposalCount + 1
    self.proposalCount = pid
    self._proposals[pid] = Proposal(
        kind=kind,
        proposer=msg.sender,
        target=target,
        name=name,
        roles=roles,
        encKey=encKey,
        paramsHash=paramsHash,
        approvals=0,
        executed=False,
    )
    log ProposalCreated(id=pid, kind=kind, proposer=msg.sender, target=target, paramsHash=paramsHash)
    self._approve(pid)
    return pid


@external
def approve(proposalId: uint256):
    assert self.isAdmin[msg.sender], "not an admin"
    assert proposalId >= 1 and proposalId <= self.proposalCount, "unknown proposal"
    assert not self._proposals[proposalId].executed, "already executed"
    self._approve(proposalId)


@internal
def _approve(pid: uint256):
    assert not self._approvedBy[pid][msg.sender], "already approved"
    self._approvedBy[pid][msg.sender] = True
    n: uint256 = self._proposals[pid].approvals + 1
    self._proposals[pid].approvals = n
    log ProposalApproved(id=pid, admin=msg.sender, approvals=n)
    if n >= self.threshold:
        self._execute(pid)


@view
@internal
def _validate(kind: uint8, target: address, roles: uint8, encKey: bytes32, paramsHash: bytes32):
    """@dev Run at propose time (fail early) and again at execution (state may have moved on)."""
    if kind == ADD_MEMBER:
        assert target != empty(address), "zero address"
        assert not self._isActive(target), "already a member"
        assert roles <= ALL_ROLES, "bad roles"
    elif kind == REMOVE_MEMBER:
        assert self._isActive(target), "not a member"
    elif kind == SET_ROLES:
        assert self._isActive(target), "not a member"
        assert roles <= ALL_ROLES, "bad roles"
    elif kind == ROTATE_KEY:
        assert self._isActive(target), "not a member"
        assert encKey != empty(bytes32), "zero key"
    elif kind == APPROVE_TASK:
        assert paramsHash != empty(bytes32), "zero params hash"
        assert not self.taskApproved[paramsHash], "task already approved"
    else:
        raise "bad kind"


@internal
def _execute(pid: uint256):
    p: Proposal = self._proposals[pid]
    self._validate(p.kind, p.target, p.roles, p.encKey, p.paramsHash)
    self._proposals[pid].executed = True
    if p.kind == ADD_MEMBER:
        self._addMember(p.target, p.name, p.roles, p.encKey)
    elif p.kind == REMOVE_MEMBER:
        self._flags[p.target] = self._flags[p.target] & 255
        log MemberRemoved(member=p.target)
    elif p.kind == SET_ROLES:
        self._flags[p.target] = convert(p.roles, uint256) | ACTIVE_BIT
        log RolesChanged(member=p.target, roles=p.roles)
    elif p.kind == ROTATE_KEY:
        self._profiles[p.target].encKey = p.encKey
        log EncKeyRotated(member=p.target, encKey=p.encKey)
    else:
        self.taskApproved[p.paramsHash] = True
        log TaskApproved(paramsHash=p.paramsHash)
    log ProposalExecuted(id=pid)


@internal
def _addMember(m: address, name: String[64], roles: uint8, encKey: bytes32):
    if not self._known[m]:
        self._known[m] = True
        self._memberList[self.memberCount] = m
        self.memberCount += 1
    self._profiles[m] = Profile(name=name, encKey=encKey)
    self._flags[m] = convert(roles, uint256) | ACTIVE_BIT
    log MemberAdded(member=m, name=name, roles=roles, encKey=encKey)
