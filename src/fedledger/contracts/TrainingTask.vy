# pragma version ~=0.4.3
"""
@title fedledger TrainingTask
@notice The federated round protocol. Trainers commit the hash of their encrypted update; a rotating
        committee of aggregators proposes the aggregate; a round is final when `quorum` committee
        members proposed the same (model hash, included set, exclusion reasons). Tasks are created only
        from parameters the Consortium's admins approved (by hash), once per approval.
@dev    Up to MAX_PARTICIPANTS participants per task. Participants come in batches of at most MAX_BATCH
        (createTask carries the first, addParticipants the others), hash-chained so that the approved
        parameters hash covers every batch: batch i is accepted only if
        keccak256(abi_encode(participants_i, wrappedKeys_i, commitment_i+1)) equals the commitment
        pending for the task (the first batch's commitment is inside the approved parameters hash).
        Round 1 opens when the last batch (next commitment zero) is in. Wrapped task keys are not kept
        in storage: each batch's are in its ParticipantsAdded event, which only an accepted batch emits.
"""

interface IConsortium:
    def roleState(a: address) -> (bool, uint8): view
    def taskApproved(paramsHash: bytes32) -> bool: view


TRAINER: constant(uint8) = 1
AGGREGATOR: constant(uint8) = 2
VALIDATOR: constant(uint8) = 4

SETUP: constant(uint256) = 0  # participants still being added
TRAINING: constant(uint256) = 1
AGGREGATING: constant(uint256) = 2
DONE: constant(uint256) = 3

MAX_PARTICIPANTS: constant(uint256) = 1024
MAX_WORDS: constant(uint256) = 4  # MAX_PARTICIPANTS / 256: bitmaps over participants, one bit each
MAX_CHUNKS: constant(uint256) = 32  # MAX_PARTICIPANTS / 32: exclusion reasons, read 32 bytes at a time
MAX_BATCH: constant(uint256) = 128
MAX_COMMITTEE: constant(uint256) = 32
MAX_LABELS: constant(uint256) = 256
PPM: constant(uint256) = 1000000
MASK16: constant(uint256) = 65535
MASK32: constant(uint256) = 4294967295
MASK64: constant(uint256) = 18446744073709551615

# Storage layout. Everything a round transaction needs sits in a few packed words, so each pays for as
# few cold storage slots as possible and the hot words never return to zero (cheap rewrites):
#
# _state[task], rewritten by every round transaction:
#   bits   0..63   current round          bits  64..71   phase
#   bits  72..135  openedAt (unix s)      bits 136..151  submissions this round
#   bits 152..167  numTrainers            bits 168..231  roundDuration
# _cfg[task], fixed once the last participant batch is in (counts grow while batches arrive):
#   bits   0..63   numRounds              bits  64..79   committeeSize
#   bits  80..95   quorum                 bits  96..111  minUpdates
#   bits 112..127  numParticipants        bits 128..143  aggregators (so far)
#   bits 144..159  participants added     bits 160..175  trainers (so far)
# _member[task][address], one word per participant:
#   bits   0..15   participant index + 1 (0 = not a participant)
#   bits  16..31   aggregator index + 1 (0 = not an aggregator in this task)
#   bit   32       trainer in this task
#   bits  64..127  registered dataset size (0 = not registered)
#   bits 128..191  last round this member proposed an aggregate in
# Per round: one bit per participant in `_submitted` (256 per word), the update's blob hash by
# participant index in `_blobs` (its sample count is in the UpdateSubmitted event), the vote counts,
# and once final the model hash and the included bitmap. Per validator, one bit per round posted.
TRAINER_FLAG: constant(uint256) = 4294967296  # 1 << 32
PROPOSED_SHIFT: constant(uint256) = 128


struct RoundState:
    round: uint256
    phase: uint256
    openedAt: uint256
    count: uint256
    numTrainers: uint256
    duration: uint256


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
    numParticipants: uint256


struct TaskMeta:
    specHash: bytes32
    initialModelHash: bytes32
    creator: address


struct TaskStateView:
    currentRound: uint256
    phase: uint8
    openedAt: uint256
    deadline: uint256
    submittedMask: DynArray[uint256, MAX_WORDS]
    numSubmitted: uint256


struct Dataset:
    numSamples: uint256
    merkleRoot: bytes32


event TaskCreated:
    taskId: indexed(uint256)
    specHash: bytes32
    initialModelHash: bytes32
    numRounds: uint256
    paramsHash: bytes32

event ParticipantsAdded:
    taskId: indexed(uint256)
    first: uint256
    participants: DynArray[address, MAX_BATCH]
    wrappedKeys: DynArray[Bytes[92], MAX_BATCH]

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
    included: DynArray[uint256, MAX_WORDS]
    reasons: Bytes[MAX_PARTICIPANTS]
    votes: uint256

event RoundFinalized:
    taskId: indexed(uint256)
    round: indexed(uint256)
    modelHash: bytes32
    included: DynArray[uint256, MAX_WORDS]

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

_state: HashMap[uint256, uint256]
_cfg: HashMap[uint256, uint256]
_meta: HashMap[uint256, TaskMeta]
_pending: HashMap[uint256, bytes32]  # commitment of the participant batches still to add
_member: HashMap[uint256, HashMap[address, uint256]]
_participants: HashMap[uint256, HashMap[uint256, address]]  # by participant index
_aggregators: HashMap[uint256, HashMap[uint256, address]]  # by aggregator index
_trainerBits: HashMap[uint256, HashMap[uint256, uint256]]  # task -> word -> bits
_merkleRoots: HashMap[uint256, HashMap[address, bytes32]]
_submitted: HashMap[uint256, HashMap[uint256, HashMap[uint256, uint256]]]  # task -> round -> word
_blobs: HashMap[uint256, HashMap[uint256, HashMap[uint256, bytes32]]]  # task -> round -> index
_lastProposal: HashMap[uint256, HashMap[address, bytes32]]  # the vote key of the latest proposal
_votes: HashMap[uint256, HashMap[uint256, HashMap[bytes32, uint256]]]
_roundModel: HashMap[uint256, HashMap[uint256, bytes32]]
_roundIncluded: HashMap[uint256, HashMap[uint256, HashMap[uint256, uint256]]]  # task -> round -> word
_metricsPosted: HashMap[uint256, HashMap[address, HashMap[uint256, uint256]]]  # bit r % 256 of word r // 256


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
        round=w & MASK64,
        phase=(w >> 64) & 255,
        openedAt=(w >> 72) & MASK64,
        count=(w >> 136) & MASK16,
        numTrainers=(w >> 152) & MASK16,
        duration=(w >> 168) & MASK64,
    )


@internal
def _store(taskId: uint256, s: RoundState):
    self._state[taskId] = (
        s.round
        | (s.phase << 64)
        | (s.openedAt << 72)
        | (s.count << 136)
        | (s.numTrainers << 152)
        | (s.duration << 168)
    )


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
def _participantWord(taskId: uint256, a: address) -> uint256:
    m: uint256 = self._member[taskId][a]
    assert m & MASK16 != 0, "not a participant"
    return m


@pure
@internal
def _words(n: uint256) -> uint256:
    return (n + 255) >> 8


@internal
def _addBatch(
    taskId: uint256,
    participants: DynArray[address, MAX_BATCH],
    wrappedKeys: DynArray[Bytes[92], MAX_BATCH],
    nextBatches: bytes32,
):
    """@dev Admit one verified batch of participants; open round 1 after the last one."""
    cfg: uint256 = self._cfg[taskId]
    n: uint256 = (cfg >> 112) & MASK16
    naggs: uint256 = (cfg >> 128) & MASK16
    added: uint256 = (cfg >> 144) & MASK16
    ntrainers: uint256 = (cfg >> 160) & MASK16
    k: uint256 = len(participants)
    assert len(wrappedKeys) == k, "wrapped keys length"
    assert added + k <= n, "participant count"

    for i: uint256 in range(k, bound=MAX_BATCH):
        p: address = participants[i]
        pActive: bool = False
        pRoles: uint8 = 0
        pActive, pRoles = staticcall IConsortium(consortium).roleState(p)
        assert pActive, "participant not a member"
        assert self._member[taskId][p] == 0, "duplicate participant"
        idx: uint256 = added + i
        m: uint256 = idx + 1
        if pRoles & TRAINER != 0:
            m |= TRAINER_FLAG
            self._trainerBits[taskId][idx >> 8] |= 1 << (idx & 255)
            ntrainers += 1
        if pRoles & AGGREGATOR != 0:
            self._aggregators[taskId][naggs] = p
            naggs += 1
            m |= naggs << 16
        self._member[taskId][p] = m
        self._participants[taskId][idx] = p
    log ParticipantsAdded(taskId=taskId, first=added, participants=participants, wrappedKeys=wrappedKeys)
    added += k
    cfg = (cfg & ((1 << 128) - 1)) | (naggs << 128) | (added << 144) | (ntrainers << 160)
    self._cfg[taskId] = cfg
    self._pending[taskId] = nextBatches
    if nextBatches != empty(bytes32):
        return

    assert added == n, "participant count"
    assert ntrainers >= 1, "no trainers"
    assert (cfg >> 64) & MASK16 <= naggs, "bad committee size"
    assert (cfg >> 96) & MASK16 <= ntrainers, "bad minUpdates"
    s: RoundState = self._load(taskId)
    s.phase = TRAINING
    s.openedAt = block.timestamp
    s.numTrainers = ntrainers
    self._store(taskId, s)
    log RoundOpened(taskId=taskId, round=1, deadline=block.timestamp + s.duration)


# ---------------------------------------------------------------- task creation

@external
def createTask(
    specHash: bytes32,
    initialModelHash: bytes32,
    numRounds: uint256,
    numParticipants: uint256,
    committeeSize: uint256,
    minUpdates: uint256,
    quorum: uint256,
    roundDuration: uint256,
    participants: DynArray[address, MAX_BATCH],
    wrappedKeys: DynArray[Bytes[92], MAX_BATCH],
    nextBatches: bytes32,
) -> uint256:
    """
    @notice Start a task whose exact parameters the admins approved, with its first participant batch.
            Round 1 opens at once when this is the only batch (`nextBatches` zero), else when the last
            batch arrives through addParticipants.
    """
    self._roles(msg.sender)
    firstBatch: bytes32 = keccak256(abi_encode(participants, wrappedKeys, nextBatches))
    paramsHash: bytes32 = keccak256(
        abi_encode(
            specHash,
            initialModelHash,
            numRounds,
            numParticipants,
            firstBatch,
            committeeSize,
            minUpdates,
            quorum,
            roundDuration,
        )
    )
    assert staticcall IConsortium(consortium).taskApproved(paramsHash), "task not approved"
    assert not self.usedParams[paramsHash], "task already created"
    self.usedParams[paramsHash] = True

    assert numParticipants >= 1, "no participants"
    assert numParticipants <= MAX_PARTICIPANTS, "too many participants"
    assert numRounds >= 1 and numRounds <= MASK64, "bad numRounds"
    assert roundDuration >= 1 and roundDuration <= MASK64, "bad roundDuration"
    assert quorum >= 1 and quorum <= committeeSize, "bad quorum"
    assert committeeSize <= MAX_COMMITTEE, "bad committee size"
    assert minUpdates >= 1 and minUpdates <= numParticipants, "bad minUpdates"

    taskId: uint256 = self.taskCount + 1
    self.taskCount = taskId
    self._meta[taskId] = TaskMeta(specHash=specHash, initialModelHash=initialModelHash, creator=msg.sender)
    self._cfg[taskId] = (
        numRounds | (committeeSize << 64) | (quorum << 80) | (minUpdates << 96) | (numParticipants << 112)
    )
    self._store(
        taskId,
        RoundState(round=1, phase=SETUP, openedAt=0, count=0, numTrainers=0, duration=roundDuration),
    )
    log TaskCreated(
        taskId=taskId,
        specHash=specHash,
        initialModelHash=initialModelHash,
        numRounds=numRounds,
        paramsHash=paramsHash,
    )
    self._addBatch(taskId, participants, wrappedKeys, nextBatches)
    return taskId


@external
def addParticipants(
    taskId: uint256,
    participants: DynArray[address, MAX_BATCH],
    wrappedKeys: DynArray[Bytes[92], MAX_BATCH],
    nextBatches: bytes32,
):
    """@notice Add the next approved batch of a task's participants (any member may send it)."""
    self._load(taskId)
    self._roles(msg.sender)
    pending: bytes32 = self._pending[taskId]
    assert pending != empty(bytes32), "participants complete"
    assert keccak256(abi_encode(participants, wrappedKeys, nextBatches)) == pending, "batch not approved"
    self._addBatch(taskId, participants, wrappedKeys, nextBatches)


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
    m: uint256 = self._participantWord(taskId, msg.sender)
    assert m & TRAINER_FLAG != 0, "not a trainer in this task"
    assert (m >> 64) & MASK64 == 0, "already registered"
    assert numSamples != 0, "zero samples"
    assert numSamples <= MASK64, "too many samples"
    assert merkleRoot != empty(bytes32), "zero merkle root"
    if len(labelHistogram) > 0:
        total: uint256 = 0
        for c: uint32 in labelHistogram:
            total += convert(c, uint256)
        assert total == numSamples, "histogram sum != numSamples"
    self._member[taskId][msg.sender] = m | (numSamples << 64)
    self._merkleRoots[taskId][msg.sender] = merkleRoot
    log DatasetRegistered(
        taskId=taskId,
        member=msg.sender,
        numSamples=numSamples,
        merkleRoot=merkleRoot,
        labelHistogram=labelHistogram,
    )


@external
def submitUpdate(taskId: uint256, round: uint256, blobHash: bytes32, numSamples: uint256):
    """
    @notice Commit the content hash of this trainer's encrypted update for the open round. The hash is
            stored; the sample count (at most the registered dataset size) is in the event only.
    """
    s: RoundState = self._load(taskId)
    assert s.phase != DONE, "task done"
    roles: uint8 = self._roles(msg.sender)
    assert roles & TRAINER != 0, "not a trainer"
    m: uint256 = self._participantWord(taskId, msg.sender)
    assert m & TRAINER_FLAG != 0, "not a trainer in this task"
    registered: uint256 = (m >> 64) & MASK64
    assert registered != 0, "dataset not registered"
    assert round == s.round, "wrong round"
    assert s.phase == TRAINING, "not in training phase"
    assert block.timestamp <= s.openedAt + s.duration, "deadline passed"
    idx: uint256 = (m & MASK16) - 1
    word: uint256 = self._submitted[taskId][round][idx >> 8]
    bit: uint256 = 1 << (idx & 255)
    assert word & bit == 0, "already submitted"
    assert blobHash != empty(bytes32), "zero blob hash"
    assert numSamples != 0 and numSamples <= registered, "bad numSamples"

    self._submitted[taskId][round][idx >> 8] = word | bit
    self._blobs[taskId][round][idx] = blobHash
    s.count += 1
    log UpdateSubmitted(taskId=taskId, round=round, member=msg.sender, blobHash=blobHash, numSamples=numSamples)
    if s.count == s.numTrainers:
        s.phase = AGGREGATING
        log AggregationStarted(taskId=taskId, round=round, numSubmitted=s.count)
    self._store(taskId, s)


# ---------------------------------------------------------------- aggregators

@external
def proposeAggregate(
    taskId: uint256,
    round: uint256,
    modelHash: bytes32,
    included: DynArray[uint256, MAX_WORDS],
    reasons: Bytes[MAX_PARTICIPANTS],
):
    """
    @notice Propose the round's aggregate: the model hash, the included participants as a bitmap
            (word w holds participants 256w..256w+255, least significant bit first) and one exclusion
            reason byte per participant (0 exactly for the included). Votes are counted per
            (modelHash, included, reasons); the round is final when one such key reaches `quorum`.
            Dissenting proposals stay in the log.
    """
    s: RoundState = self._load(taskId)
    assert s.phase != DONE, "task done"
    roles: uint8 = self._roles(msg.sender)
    assert roles & AGGREGATOR != 0, "not an aggregator"
    assert round == s.round, "wrong round"

    cfg: uint256 = self._cfg[taskId]
    committeeSize: uint256 = (cfg >> 64) & MASK16
    m: uint256 = self._member[taskId][msg.sender]
    aidx: uint256 = (m >> 16) & MASK16
    assert aidx != 0, "not in committee"
    na: uint256 = (cfg >> 128) & MASK16
    start: uint256 = ((round - 1) * committeeSize) % na
    assert (aidx - 1 + na - start) % na < committeeSize, "not in committee"

    if s.phase == TRAINING:
        ready: bool = block.timestamp > s.openedAt + s.duration
        assert ready and s.count >= (cfg >> 96) & MASK16, "round not ready for aggregation"
        s.phase = AGGREGATING
        log AggregationStarted(taskId=taskId, round=round, numSubmitted=s.count)
    assert s.phase == AGGREGATING, "round not ready for aggregation"

    assert (m >> PROPOSED_SHIFT) & MASK64 < round, "already proposed"
    assert modelHash != empty(bytes32), "zero model hash"
    n: uint256 = (cfg >> 112) & MASK16
    nw: uint256 = self._words(n)
    assert len(included) == nw, "included length"
    anyIncluded: uint256 = 0
    for w: uint256 in range(nw, bound=MAX_WORDS):
        assert included[w] & ~self._submitted[taskId][round][w] == 0, "included not submitted"
        anyIncluded |= included[w]
    assert anyIncluded != 0, "nothing included"
    assert len(reasons) == n, "reasons length"
    # Reason byte i must be zero exactly when bit i is set. Read 32 reasons at a time (zero-padded, so
    # the last chunk may be short) against the matching 32 bits of `included`.
    padded: Bytes[MAX_PARTICIPANTS + 32] = concat(reasons, empty(bytes32))
    for c: uint256 in range((n + 31) >> 5, bound=MAX_CHUNKS):
        first: uint256 = c << 5
        chunk: uint256 = extract32(padded, first, output_type=uint256)
        bits: uint256 = (included[first >> 8] >> (first & 255)) & MASK32
        for j: uint256 in range(min(32, n - first), bound=32):
            reason: uint256 = (chunk >> (248 - (j << 3))) & 255
            if (bits >> j) & 1 == 1:
                assert reason == 0, "reason set for included"
            else:
                assert reason != 0, "reason missing for excluded"

    key: bytes32 = keccak256(abi_encode(modelHash, included, reasons))
    self._member[taskId][msg.sender] = (m & ~(MASK64 << PROPOSED_SHIFT)) | (round << PROPOSED_SHIFT)
    self._lastProposal[taskId][msg.sender] = key
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

    if votes == (cfg >> 80) & MASK16:
        self._roundModel[taskId][round] = modelHash
        for w: uint256 in range(nw, bound=MAX_WORDS):
            if included[w] != 0:
                self._roundIncluded[taskId][round][w] = included[w]
        log RoundFinalized(taskId=taskId, round=round, modelHash=modelHash, included=included)
        if round == cfg & MASK64:
            s.phase = DONE
            log TaskCompleted(taskId=taskId, modelHash=modelHash)
        else:
            s.round = round + 1
            s.phase = TRAINING
            s.openedAt = block.timestamp
            s.count = 0
            log RoundOpened(taskId=taskId, round=round + 1, deadline=block.timestamp + s.duration)
    self._store(taskId, s)


@external
def reopenRound(taskId: uint256):
    """@notice Restart the deadline of a round that expired with fewer than minUpdates submissions."""
    s: RoundState = self._load(taskId)
    assert s.phase != DONE, "task done"
    self._roles(msg.sender)
    self._participantWord(taskId, msg.sender)
    assert s.phase == TRAINING, "not in training phase"
    assert block.timestamp > s.openedAt + s.duration, "deadline not passed"
    assert s.count < (self._cfg[taskId] >> 96) & MASK16, "enough updates to aggregate"
    s.openedAt = block.timestamp
    self._store(taskId, s)
    log RoundReopened(taskId=taskId, round=s.round, deadline=block.timestamp + s.duration)


# ---------------------------------------------------------------- validators

@external
def postMetrics(taskId: uint256, round: uint256, accuracyPpm: uint256, lossPpm: uint256, numExamples: uint256):
    """@notice Record a validator's evaluation of a finalised round's model, once per validator."""
    self._load(taskId)
    roles: uint8 = self._roles(msg.sender)
    assert roles & VALIDATOR != 0, "not a validator"
    self._participantWord(taskId, msg.sender)
    assert self._roundModel[taskId][round] != empty(bytes32), "round not final"
    posted: uint256 = self._metricsPosted[taskId][msg.sender][round >> 8]
    bit: uint256 = 1 << (round & 255)
    assert posted & bit == 0, "already posted"
    assert accuracyPpm <= PPM, "accuracy above 1"
    self._metricsPosted[taskId][msg.sender][round >> 8] = posted | bit
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
    s: RoundState = self._load(taskId)
    cfg: uint256 = self._cfg[taskId]
    meta: TaskMeta = self._meta[taskId]
    return TaskConfig(
        specHash=meta.specHash,
        initialModelHash=meta.initialModelHash,
        numRounds=cfg & MASK64,
        committeeSize=(cfg >> 64) & MASK16,
        minUpdates=(cfg >> 96) & MASK16,
        quorum=(cfg >> 80) & MASK16,
        roundDuration=s.duration,
        numTrainers=(cfg >> 160) & MASK16,
        creator=meta.creator,
        numParticipants=(cfg >> 112) & MASK16,
    )


@view
@external
def participants(taskId: uint256) -> DynArray[address, MAX_PARTICIPANTS]:
    """@notice The participants added so far, in participant order (all of them once set up)."""
    out: DynArray[address, MAX_PARTICIPANTS] = []
    for i: uint256 in range((self._cfg[taskId] >> 144) & MASK16, bound=MAX_PARTICIPANTS):
        out.append(self._participants[taskId][i])
    return out


@view
@external
def aggregators(taskId: uint256) -> DynArray[address, MAX_PARTICIPANTS]:
    out: DynArray[address, MAX_PARTICIPANTS] = []
    for i: uint256 in range((self._cfg[taskId] >> 128) & MASK16, bound=MAX_PARTICIPANTS):
        out.append(self._aggregators[taskId][i])
    return out


@view
@external
def trainerMask(taskId: uint256) -> DynArray[uint256, MAX_WORDS]:
    """@notice Which participants are trainers in this task: bit i of word i // 256 is participant i."""
    out: DynArray[uint256, MAX_WORDS] = []
    for w: uint256 in range(self._words((self._cfg[taskId] >> 112) & MASK16), bound=MAX_WORDS):
        out.append(self._trainerBits[taskId][w])
    return out


@view
@external
def pendingParticipants(taskId: uint256) -> bytes32:
    """@notice The commitment of the participant batches still to add (zero once all are in)."""
    return self._pending[taskId]


@view
@external
def state(taskId: uint256) -> TaskStateView:
    s: RoundState = self._load(taskId)
    mask: DynArray[uint256, MAX_WORDS] = []
    for w: uint256 in range(self._words((self._cfg[taskId] >> 112) & MASK16), bound=MAX_WORDS):
        mask.append(self._submitted[taskId][s.round][w])
    return TaskStateView(
        currentRound=s.round,
        phase=convert(s.phase, uint8),
        openedAt=s.openedAt,
        deadline=s.openedAt + s.duration,
        submittedMask=mask,
        numSubmitted=s.count,
    )


@view
@external
def committee(taskId: uint256, round: uint256) -> DynArray[address, MAX_COMMITTEE]:
    """@notice The aggregators who may propose in `round` (none while participants are being added)."""
    s: RoundState = self._load(taskId)
    assert round >= 1, "bad round"
    out: DynArray[address, MAX_COMMITTEE] = []
    if s.phase == SETUP:
        return out
    cfg: uint256 = self._cfg[taskId]
    size: uint256 = (cfg >> 64) & MASK16
    na: uint256 = (cfg >> 128) & MASK16
    start: uint256 = ((round - 1) * size) % na
    for k: uint256 in range(size, bound=MAX_COMMITTEE):
        out.append(self._aggregators[taskId][(start + k) % na])
    return out


@view
@external
def submission(taskId: uint256, round: uint256, member: address) -> bytes32:
    """@notice The blob hash `member` committed in `round` (zero = none)."""
    m: uint256 = self._member[taskId][member]
    if m & MASK16 == 0:
        return empty(bytes32)
    return self._blobs[taskId][round][(m & MASK16) - 1]


@view
@external
def roundSubmissions(taskId: uint256, round: uint256) -> DynArray[bytes32, MAX_PARTICIPANTS]:
    """@notice Every participant's committed blob hash for `round`, in participant order (zero = none)."""
    out: DynArray[bytes32, MAX_PARTICIPANTS] = []
    for i: uint256 in range((self._cfg[taskId] >> 144) & MASK16, bound=MAX_PARTICIPANTS):
        out.append(self._blobs[taskId][round][i])
    return out


@view
@external
def roundModel(taskId: uint256, round: uint256) -> bytes32:
    return self._roundModel[taskId][round]


@view
@external
def roundIncluded(taskId: uint256, round: uint256) -> DynArray[uint256, MAX_WORDS]:
    """@notice The finalised included bitmap of `round` (all zero until final)."""
    out: DynArray[uint256, MAX_WORDS] = []
    for w: uint256 in range(self._words((self._cfg[taskId] >> 112) & MASK16), bound=MAX_WORDS):
        out.append(self._roundIncluded[taskId][round][w])
    return out


@view
@external
def proposalOf(taskId: uint256, round: uint256, aggregator: address) -> bytes32:
    """@notice The vote key `aggregator` proposed in `round`, if that is its latest proposal (older ones
            are in the AggregateProposed events)."""
    if (self._member[taskId][aggregator] >> PROPOSED_SHIFT) & MASK64 != round:
        return empty(bytes32)
    return self._lastProposal[taskId][aggregator]


@view
@external
def votes(taskId: uint256, round: uint256, key: bytes32) -> uint256:
    return self._votes[taskId][round][key]


@view
@external
def dataset(taskId: uint256, member: address) -> Dataset:
    return Dataset(
        numSamples=(self._member[taskId][member] >> 64) & MASK64,
        merkleRoot=self._merkleRoots[taskId][member],
    )
