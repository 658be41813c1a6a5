# pragma version ~=0.4.3
"""
@title fedledger TrainingTask
@notice The federated round protocol. Trainers commit the hash of their encrypted update; a rotating
        committee of aggregators proposes the aggregate; a round is final when `quorum` committee
        members proposed the same (model hash, included set, exclusion reasons). Tasks are created only
        from parameters the Consortium's admins approved (by hash), once per approval.
"""

interface IConsortium:
    def roleState(a: address) -> (bool, uint8): view
    def taskApproved(paramsHash: bytes32) -> bool: view


TRAINER: constant(uint8) = 1
AGGREGATOR: constant(uint8) = 2
VALIDATOR: constant(uint8) = 4

TRAINING: constant(uint256) = 1
AGGREGATING: constant(uint256) = 2
DONE: constant(uint256) = 3

MAX_PARTICIPANTS: constant(uint256) = 64
MAX_COMMITTEE: constant(uint256) = 32
MAX_LABELS: constant(uint256) = 256
PPM: constant(uint256) = 1000000

# The mutable round state of a task lives in ONE storage word, so submitUpdate reads and writes a
# single slot (and the word never returns to zero, so writes are the cheap non-zero -> non-zero kind):
#   bits   0..63   submitted mask (bit i = participant i)
#   bits  64..71   number of submissions
#   bits  72..79   phase
#   bits  80..143  openedAt (unix seconds)
#   bits 144..207  current round
MASK64: constant(uint256) = 18446744073709551615


struct RoundState:
    round: uint256
    phase: uint256
    openedAt: uint256
    mask: uint256
    count: uint256


struct TaskConfig:
    specHash: bytes32
    initialModelHash: bytes32
    numRounds: uint256
    committeeSize: uint256
    minUpdates: uint256
    quorum: uint256
    roundDuration: uint256
    numTrainers: uint256
    creator: address


struct TaskStateView:
    currentRound: uint256
    phase: uint8
    openedAt: uint256
    deadline: uint256
    submittedMask: uint256
    numSubmitted: uint256


struct Submission:
    blobHash: bytes32
    numSamples: uint256


struct Dataset:
    numSamples: uint256
    merkleRoot: bytes32


event TaskCreated:
    taskId: indexed(uint256)
    specHash: bytes32
    initialModelHash: bytes32
    numRounds: uint256
    paramsHash: bytes32

event RoundOpened:
    taskId: indexed(uint256)
    round: indexed(uint256)
    deadline: uint256

event RoundReopened:
    taskId: indexed(uint256)
    round: indexed(uint256)
    deadline: uint256

event DatasetRegistered:
    taskId: indexed(uint256)
    member: indexed(address)
    numSamples: uint256
    merkleRoot: bytes32
    labelHistogram: DynArray[uint32, MAX_LABELS]

event UpdateSubmitted:
    taskId: indexed(uint256)
    round: indexed(uint256)
    member: indexed(address)
    blobHash: bytes32
    numSamples: uint256

event AggregationStarted:
    taskId: indexed(uint256)
    round: indexed(uint256)
    numSubmitted: uint256

event AggregateProposed:
    taskId: indexed(uint256)
    round: indexed(uint256)
    aggregator: indexed(address)
    modelHash: bytes32
    included: uint256
    reasons: DynArray[uint8, MAX_PARTICIPANTS]
    votes: uint256

event RoundFinalized:
    taskId: indexed(uint256)
    round: indexed(uint256)
    modelHash: bytes32
    included: uint256

event TaskCompleted:
    taskId: indexed(uint256)
    modelHash: bytes32

event MetricsPosted:
    taskId: indexed(uint256)
    round: indexed(uint256)
    validator: indexed(address)
    accuracyPpm: uint256
    lossPpm: uint256
    numExamples: uint256


consortium: public(immutable(address))
taskCount: public(uint256)
usedParams: public(HashMap[bytes32, bool])
trainerMask: public(HashMap[uint256, uint256])

_config: HashMap[uint256, TaskConfig]
_state: HashMap[uint256, uint256]
_participants: HashMap[uint256, DynArray[address, MAX_PARTICIPANTS]]
_aggregators: HashMap[uint256, DynArray[address, MAX_PARTICIPANTS]]
_pindex: HashMap[uint256, HashMap[address, uint256]]  # participant index + 1 (0 = not a participant)
_aindex: HashMap[uint256, HashMap[address, uint256]]  # aggregator index + 1 (0 = not an aggregator)
_wrappedKeys: HashMap[uint256, HashMap[address, Bytes[92]]]
_datasets: HashMap[uint256, HashMap[address, Dataset]]
_submissions: HashMap[uint256, HashMap[uint256, HashMap[address, Submission]]]
_roundModel: HashMap[uint256, HashMap[uint256, bytes32]]
_roundIncluded: HashMap[uint256, HashMap[uint256, uint256]]
_proposals: HashMap[uint256, HashMap[uint256, HashMap[address, bytes32]]]
_votes: HashMap[uint256, HashMap[uint256, HashMap[bytes32, uint256]]]
_metricsPosted: HashMap[uint256, HashMap[uint256, HashMap[address, bool]]]


@deploy
def __init__(consortium_: address):
    assert consortium_ != empty(address), "zero address"
    consortium = consortium_


# ---------------------------------------------------------------- internal helpers

@view
@internal
def _load(taskId: uint256) -> RoundState:
    w: uint256 = self._state[taskId]
    assert w != 0, "unknown task"
    return RoundState(
        round=w >> 144,
        phase=(w >> 72) & 255,
        openedAt=(w >> 80) & MASK64,
        mask=w & MASK64,
        count=(w >> 64) & 255,
    )


@internal
def _store(taskId: uint256, s: RoundState):
    self._state[taskId] = s.mask | (s.count << 64) | (s.phase << 72) | (s.openedAt << 80) | (s.round << 144)


@view
@internal
def _roles(a: address) -> uint8:
    """@dev The caller's roles; reverts "not a member" unless active in the Consortium."""
    active: bool = False
    roles: uint8 = 0
    active, roles = staticcall IConsortium(consortium).roleState(a)
    assert active, "not a member"
    return roles


@view
@internal
def _participantBit(taskId: uint256, a: address) -> uint256:
    idx: uint256 = self._pindex[taskId][a]
    assert idx != 0, "not a participant"
    return 1 << (idx - 1)


@view
@internal
def _committeeStart(taskId: uint256, rnd: uint256) -> uint256:
    return ((rnd - 1) * self._config[taskId].committeeSize) % len(self._aggregators[taskId])


# ---------------------------------------------------------------- task creation

@external
def createTask(
    specHash: bytes32,
    initialModelHash: bytes32,
    numRounds: uint256,
    participants: DynArray[address, MAX_PARTICIPANTS],
    wrappedKeys: DynArray[Bytes[92], MAX_PARTICIPANTS],
    committeeSize: uint256,
    minUpdates: uint256,
    quorum: uint256,
    roundDuration: uint256,
) -> uint256:
    """@notice Start a task whose exact parameters the admins approved; round 1 opens at once."""
    self._roles(msg.sender)
    paramsHash: bytes32 = keccak256(
        abi_encode(
            specHash,
            initialModelHash,
            numRounds,
            participants,
            wrappedKeys,
            committeeSize,
            minUpdates,
            quorum,
            roundDuration,
        )
    )
    assert staticcall IConsortium(consortium).taskApproved(paramsHash), "task not approved"
    assert not self.usedParams[paramsHash], "task already created"
    self.usedParams[paramsHash] = True

    n: uint256 = len(participants)
    assert n >= 1, "no participants"
    assert len(wrappedKeys) == n, "wrapped keys length"
    assert numRounds >= 1 and numRounds <= MASK64, "bad numRounds"
    assert roundDuration >= 1 and roundDuration <= MASK64, "bad roundDuration"

    taskId: uint256 = self.taskCount + 1
    self.taskCount = taskId

    tmask: uint256 = 0
    numTrainers: uint256 = 0
    aggs: DynArray[address, MAX_PARTICIPANTS] = []
    for i: uint256 in range(n, bound=MAX_PARTICIPANTS):
        p: address = participants[i]
        pActive: bool = False
        pRoles: uint8 = 0
        pActive, pRoles = staticcall IConsortium(consortium).roleState(p)
        assert pActive, "participant not a member"
        assert self._pindex[taskId][p] == 0, "duplicate participant"
        self._pindex[taskId][p] = i + 1
        self._wrappedKeys[taskId][p] = wrappedKeys[i]
        if pRoles & TRAINER != 0:
            tmask |= 1 << i
            numTrainers += 1
        if pRoles & AGGREGATOR != 0:
            aggs.append(p)
            self._aindex[taskId][p] = len(aggs)

    assert numTrainers >= 1, "no trainers"
    assert quorum >= 1 and quorum <= committeeSize, "bad quorum"
    assert committeeSize <= len(aggs) and committeeSize <= MAX_COMMITTEE, "bad committee size"
    assert minUpdates >= 1 and minUpdates <= numTrainers, "bad minUpdates"

    self._config[taskId] = TaskConfig(
        specHash=specHash,
        initialModelHash=initialModelHash,
        numRounds=numRounds,
        committeeSize=committeeSize,
        minUpdates=minUpdates,
        quorum=quorum,
        roundDuration=roundDuration,
        numTrainers=numTrainers,
        creator=msg.sender,
    )
    self._participants[taskId] = participants
    self._aggregators[taskId] = aggs
    self.trainerMask[taskId] = tmask
    self._store(taskId, RoundState(round=1, phase=TRAINING, openedAt=block.timestamp, mask=0, count=0))
    log TaskCreated(
        taskId=taskId,
        specHash=specHash,
        initialModelHash=initialModelHash,
        numRounds=numRounds,
        paramsHash=paramsHash,
    )
    log RoundOpened(taskId=taskId, round=1, deadline=block.timestamp + roundDuration)
    return taskId


# ---------------------------------------------------------------- trainers

@external
def registerDataset(
    taskId: uint256,
    numSamples: uint256,
    labelHistogram: DynArray[uint32, MAX_LABELS],
    merkleRoot: bytes32,
):
    """@notice Commit a fingerprint of the local dataset (count, label histogram, Merkle root), once."""
    s: RoundState = self._load(taskId)
    assert s.phase != DONE, "task done"
    roles: uint8 = self._roles(msg.sender)
    assert roles & TRAINER != 0, "not a trainer"
    bit: uint256 = self._participantBit(taskId, msg.sender)
    assert self.trainerMask[taskId] & bit != 0, "not a trainer in this task"
    assert self._datasets[taskId][msg.sender].numSamples == 0, "already registered"
    assert numSamples != 0, "zero samples"
    assert merkleRoot != empty(bytes32), "zero merkle root"
    if len(labelHistogram) > 0:
        total: uint256 = 0
        for c: uint32 in labelHistogram:
            total += convert(c, uint256)
        assert total == numSamples, "histogram sum != numSamples"
    self._datasets[taskId][msg.sender] = Dataset(numSamples=numSamples, merkleRoot=merkleRoot)
    log DatasetRegistered(
        taskId=taskId,
        member=msg.sender,
        numSamples=numSamples,
        merkleRoot=merkleRoot,
        labelHistogram=labelHistogram,
    )


@external
def submitUpdate(taskId: uint256, round: uint256, blobHash: bytes32, numSamples: uint256):
    """@notice Commit the content hash of this trainer's encrypted update for the open round."""
    s: RoundState = self._load(taskId)
    assert s.phase != DONE, "task done"
    roles: uint8 = self._roles(msg.sender)
    assert roles & TRAINER != 0, "not a trainer"
    bit: uint256 = self._participantBit(taskId, msg.sender)
    assert self.trainerMask[taskId] & bit != 0, "not a trainer in this task"
    registered: uint256 = self._datasets[taskId][msg.sender].numSamples
    assert registered != 0, "dataset not registered"
    assert round == s.round, "wrong round"
    assert s.phase == TRAINING, "not in training phase"
    assert block.timestamp <= s.openedAt + self._config[taskId].roundDuration, "deadline passed"
    assert s.mask & bit == 0, "already submitted"
    assert blobHash != empty(bytes32), "zero blob hash"
    assert numSamples != 0 and numSamples <= registered, "bad numSamples"

    self._submissions[taskId][round][msg.sender] = Submission(blobHash=blobHash, numSamples=numSamples)
    s.mask |= bit
    s.count += 1
    log UpdateSubmitted(taskId=taskId, round=round, member=msg.sender, blobHash=blobHash, numSamples=numSamples)
    if s.count == self._config[taskId].numTrainers:
        s.phase = AGGREGATING
        log AggregationStarted(taskId=taskId, round=round, numSubmitted=s.count)
    self._store(taskId, s)


# ---------------------------------------------------------------- aggregators

@external
def proposeAggregate(
    taskId: uint256,
    round: uint256,
    modelHash: bytes32,
    included: uint256,
    reasons: DynArray[uint8, MAX_PARTICIPANTS],
):
    """
    @notice Propose the round's aggregate. Votes are counted per (modelHash, included, reasons); the
            round is final when one such key reaches `quorum`. Dissenting proposals stay in the log.
    """
    s: RoundState = self._load(taskId)
    assert s.phase != DONE, "task done"
    roles: uint8 = self._roles(msg.sender)
    assert roles & AGGREGATOR != 0, "not an aggregator"
    assert round == s.round, "wrong round"

    # Read only the config fields needed (each is its own storage slot).
    committeeSize: uint256 = self._config[taskId].committeeSize
    aidx: uint256 = self._aindex[taskId][msg.sender]
    assert aidx != 0, "not in committee"
    na: uint256 = len(self._aggregators[taskId])
    start: uint256 = ((round - 1) * committeeSize) % na
    assert (aidx - 1 + na - start) % na < committeeSize, "not in committee"

    if s.phase == TRAINING:
        ready: bool = block.timestamp > s.openedAt + self._config[taskId].roundDuration
        assert ready and s.count >= self._config[taskId].minUpdates, "round not ready for aggregation"
        s.phase = AGGREGATING
        log AggregationStarted(taskId=taskId, round=round, numSubmitted=s.count)
    assert s.phase == AGGREGATING, "round not ready for aggregation"

    assert self._proposals[taskId][round][msg.sender] == empty(bytes32), "already proposed"
    assert modelHash != empty(bytes32), "zero model hash"
    assert included != 0, "nothing included"
    assert included & ~s.mask == 0, "included not submitted"
    n: uint256 = len(self._participants[taskId])
    assert len(reasons) == n, "reasons length"
    for i: uint256 in range(n, bound=MAX_PARTICIPANTS):
        if (included >> i) & 1 == 1:
            assert reasons[i] == 0, "reason set for included"
        else:
            assert reasons[i] != 0, "reason missing for excluded"

    key: bytes32 = keccak256(abi_encode(modelHash, included, reasons))
    self._proposals[taskId][round][msg.sender] = key
    votes: uint256 = self._votes[taskId][round][key] + 1
    self._votes[taskId][round][key] = votes
    log AggregateProposed(
        taskId=taskId,
        round=round,
        aggregator=msg.sender,
        modelHash=modelHash,
        included=included,
        reasons=reasons,
        votes=votes,
    )

    if votes == self._config[taskId].quorum:
        self._roundModel[taskId][round] = modelHash
        self._roundIncluded[taskId][round] = included
        log RoundFinalized(taskId=taskId, round=round, modelHash=modelHash, included=included)
        if round == self._config[taskId].numRounds:
            s.phase = DONE
            log TaskCompleted(taskId=taskId, modelHash=modelHash)
        else:
            s = RoundState(round=round + 1, phase=TRAINING, openedAt=block.timestamp, mask=0, count=0)
            duration: uint256 = self._config[taskId].roundDuration
            log RoundOpened(taskId=taskId, round=round + 1, deadline=block.timestamp + duration)
    self._store(taskId, s)


@external
def reopenRound(taskId: uint256):
    """@notice Restart the deadline of a round that expired with fewer than minUpdates submissions."""
    s: RoundState = self._load(taskId)
    assert s.phase != DONE, "task done"
    self._roles(msg.sender)
    self._participantBit(taskId, msg.sender)
    assert s.phase == TRAINING, "not in training phase"
    duration: uint256 = self._config[taskId].roundDuration
    assert block.timestamp > s.openedAt + duration, "deadline not passed"
    assert s.count < self._config[taskId].minUpdates, "enough updates to aggregate"
    s.openedAt = block.timestamp
    self._store(taskId, s)
    log RoundReopened(taskId=taskId, round=s.round, deadline=block.timestamp + duration)


# ---------------------------------------------------------------- validators

@external
def postMetrics(taskId: uint256, round: uint256, accuracyPpm: uint256, lossPpm: uint256, numExamples: uint256):
    """@notice Record a validator's evaluation of a finalised round's model, once per validator."""
    self._load(taskId)
    roles: uint8 = self._roles(msg.sender)
    assert roles & VALIDATOR != 0, "not a validator"
    self._participantBit(taskId, msg.sender)
    assert self._roundModel[taskId][round] != empty(bytes32), "round not final"
    assert not self._metricsPosted[taskId][round][msg.sender], "already posted"
    assert accuracyPpm <= PPM, "accuracy above 1"
    self._metricsPosted[taskId][round][msg.sender] = True
    log MetricsPosted(
        taskId=taskId,
        round=round,
        validator=msg.sender,
        accuracyPpm=accuracyPpm,
        lossPpm=lossPpm,
        numExamples=numExamples,
    )


# ---------------------------------------------------------------- views

@view
@external
def getTask(taskId: uint256) -> TaskConfig:
    self._load(taskId)
    return self._config[taskId]


@view
@external
def participants(taskId: uint256) -> DynArray[address, MAX_PARTICIPANTS]:
    return self._participants[taskId]


@view
@external
def aggregators(taskId: uint256) -> DynArray[address, MAX_PARTICIPANTS]:
    return self._aggregators[taskId]


@view
@external
def state(taskId: uint256) -> TaskStateView:
    s: RoundState = self._load(taskId)
    return TaskStateView(
        currentRound=s.round,
        phase=convert(s.phase, uint8),
        openedAt=s.openedAt,
        deadline=s.openedAt + self._config[taskId].roundDuration,
        submittedMask=s.mask,
        numSubmitted=s.count,
    )


@view
@external
def committee(taskId: uint256, round: uint256) -> DynArray[address, MAX_COMMITTEE]:
    self._load(taskId)
    assert round >= 1, "bad round"
    size: uint256 = self._config[taskId].committeeSize
    na: uint256 = len(self._aggregators[taskId])
    start: uint256 = self._committeeStart(taskId, round)
    out: DynArray[address, MAX_COMMITTEE] = []
    for k: uint256 in range(size, bound=MAX_COMMITTEE):
        out.append(self._aggregators[taskId][(start + k) % na])
    return out


@view
@external
def submission(taskId: uint256, round: uint256, member: address) -> Submission:
    return self._submissions[taskId][round][member]


@view
@external
def roundSubmissions(taskId: uint256, round: uint256) -> DynArray[Submission, MAX_PARTICIPANTS]:
    """@notice Every participant's submission for `round`, in participant order (zero = none)."""
    out: DynArray[Submission, MAX_PARTICIPANTS] = []
    for p: address in self._participants[taskId]:
        out.append(self._submissions[taskId][round][p])
    return out


@view
@external
def roundModel(taskId: uint256, round: uint256) -> bytes32:
    return self._roundModel[taskId][round]


@view
@external
def roundIncluded(taskId: uint256, round: uint256) -> uint256:
    return self._roundIncluded[taskId][round]


@view
@external
def proposalOf(taskId: uint256, round: uint256, aggregator: address) -> bytes32:
    return self._proposals[taskId][round][aggregator]


@view
@external
def votes(taskId: uint256, round: uint256, key: bytes32) -> uint256:
    return self._votes[taskId][round][key]


@view
@external
def wrappedKey(taskId: uint256, member: address) -> Bytes[92]:
    return self._wrappedKeys[taskId][member]


@view
@external
def dataset(taskId: uint256, member: address) -> Dataset:
    return self._datasets[taskId][member]
