"""Keystores, task-key wrapping, sealed blobs and content addresses."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from fedledger.crypto import (
    BLOB_MAGIC,
    BLOB_OVERHEAD,
    WRAPPED_KEY_SIZE,
    BlobContext,
    MemberIdentity,
    TaskKey,
    content_address,
    from_hex,
    load_keystore,
    new_identity,
    open_blob,
    read_password,
    save_keystore,
    seal,
    to_hex,
    unwrap_task_key,
    wrap_task_key,
)
from fedledger.crypto import blobs as blobs_module
from fedledger.errors import DecryptionError, KeystoreError, UsageError

PASSWORD = "correct horse battery staple"
CONTRACT = "0x" + "5a" * 20
SENDER = "0x" + "c3" * 20
OTHER = "0x" + "d4" * 20


def ctx(**changes: object) -> BlobContext:
    base = BlobContext(chain_id=1337, contract=CONTRACT, task_id=7, round=3, sender=SENDER, kind="update")
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def identity() -> MemberIdentity:
    return new_identity("hospital-1")


@pytest.fixture
def key() -> TaskKey:
    return TaskKey.generate()


# --- keystore -------------------------------------------------------------------------------------------


def test_keystore_round_trip(tmp_path: Path, identity: MemberIdentity) -> None:
    path = tmp_path / "keys" / "hospital-1.json"
    save_keystore(path, identity, PASSWORD, light=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["hospital-1.json"]  # no temp file left behind

    loaded = load_keystore(path, PASSWORD)
    assert loaded.name == "hospital-1"
    assert loaded.address == identity.address
    assert loaded.enc_key_version == 1
    assert loaded.enc_public_key == identity.enc_public_key
    assert loaded == identity


def test_keystore_is_a_standard_v3_file(tmp_path: Path, identity: MemberIdentity) -> None:
    path = tmp_path / "k.json"
    save_keystore(path, identity, PASSWORD, light=True)
    document = json.loads(path.read_text())
    assert document["version"] == 3
    assert document["crypto"]["kdf"] == "scrypt"
    assert document["crypto"]["kdfparams"]["n"] == 2**12
    assert document["fedledger"] == {"name": "hospital-1", "enc_key_version": 1}
    # Any Ethereum tool can unlock it: eth-account itself, ignoring our extra field.
    assert bytes(Account.decrypt(document, PASSWORD)) == bytes(identity.account.key)


def test_keystore_pbkdf2_and_plain_geth_file(tmp_path: Path, identity: MemberIdentity) -> None:
    path = tmp_path / "k.json"
    save_keystore(path, identity, PASSWORD, kdf="pbkdf2", light=True)
    assert load_keystore(path, PASSWORD).address == identity.address

    geth = tmp_path / "UTC--2024--abc.json"
    geth.write_text(
        json.dumps(Account.encrypt(identity.account.key, PASSWORD, kdf="scrypt", iterations=2**10))
    )
    loaded = load_keystore(geth, PASSWORD)
    assert loaded.name == geth.stem and loaded.enc_key_version == 1 and loaded.address == identity.address


def test_keystore_refuses_to_overwrite(tmp_path: Path, identity: MemberIdentity) -> None:
    path = tmp_path / "k.json"
    save_keystore(path, identity, PASSWORD, light=True)
    with pytest.raises(KeystoreError, match="already exists"):
        save_keystore(path, new_identity("other"), PASSWORD, light=True)
    save_keystore(path, new_identity("other"), PASSWORD, light=True, overwrite=True)
    assert load_keystore(path, PASSWORD).name == "other"


def test_keystore_wrong_password_names_the_file(tmp_path: Path, identity: MemberIdentity) -> None:
    path = tmp_path / "keys" / "hospital-1.json"
    save_keystore(path, identity, PASSWORD, light=True)
    with pytest.raises(KeystoreError) as info:
        load_keystore(path, "not the password")
    message = str(info.value)
    assert message == f"{path}: wrong password (MAC mismatch)"
    assert "not the password" not in message and PASSWORD not in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{ not json", "not a JSON keystore"),
        ('{"version": 1}', "not an Ethereum v3 keystore"),
        ("[]", "not an Ethereum v3 keystore"),
        (
            '{"version": 3, "crypto": {"ciphertext": "00", "kdf": "bogus", "kdfparams": {}, "mac": "00"}}',
            "malformed v3 keystore",
        ),
    ],
)
def test_keystore_malformed(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(KeystoreError, match=expected) as info:
        load_keystore(path, PASSWORD)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_keystore_missing_and_binary(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="keystore not found"):
        load_keystore(tmp_path / "nope.json", PASSWORD)
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(KeystoreError, match="not a JSON keystore"):
        load_keystore(binary, PASSWORD)


def test_keystore_tampered_metadata(tmp_path: Path, identity: MemberIdentity) -> None:
    path = tmp_path / "k.json"
    save_keystore(path, identity, PASSWORD, light=True)
    document = json.loads(path.read_text())
    document["address"] = "11" * 20
    path.write_text(json.dumps(document))
    with pytest.raises(KeystoreError, match="address field does not match"):
        load_keystore(path, PASSWORD)


def test_keystore_empty_password_refused(tmp_path: Path, identity: MemberIdentity) -> None:
    with pytest.raises(KeystoreError, match="empty password"):
        save_keystore(tmp_path / "k.json", identity, "", light=True)
    assert not (tmp_path / "k.json").exists()


def test_repr_hides_keys(identity: MemberIdentity, key: TaskKey) -> None:
    secret_hex = bytes(identity.account.key).hex()
    enc_hex = identity.enc_public_key.hex()
    for text in (repr(identity), str(identity)):
        assert secret_hex not in text and secret_hex.upper() not in text
        assert enc_hex not in text
        assert identity.address in text and "hospital-1" in text
    assert key.secret.hex() not in repr(key) and repr(key) == "TaskKey(<hidden>)"
    assert str(key.secret) not in repr(key)


def test_x25519_key_is_deterministic_and_versioned(identity: MemberIdentity) -> None:
    again = MemberIdentity(identity.name, identity.account, identity.enc_key_version)
    assert again.enc_public_key == identity.enc_public_key
    rotated = dataclasses.replace(identity, enc_key_version=2)
    assert rotated.enc_public_key != identity.enc_public_key
    assert rotated.address == identity.address
    assert len(identity.enc_public_key) == 32


def test_identity_validation(identity: MemberIdentity) -> None:
    with pytest.raises(UsageError):
        MemberIdentity("", identity.account, 1)
    with pytest.raises(UsageError):
        MemberIdentity("x", identity.account, 0)


def test_read_password_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDLEDGER_PASSWORD", raising=False)
    with pytest.raises(KeystoreError, match="set FEDLEDGER_PASSWORD or pass --password-file"):
        read_password()

    monkeypatch.setenv("FEDLEDGER_PASSWORD", "from-env")
    assert read_password() == "from-env"

    password_file = tmp_path / "pw"
    password_file.write_text(" from file \n")
    assert read_password(password_file=password_file) == " from file "  # the file wins; only \n stripped
    password_file.write_text("crlf\r\n")
    assert read_password(password_file=password_file) == "crlf"

    missing = tmp_path / "missing-pw"
    with pytest.raises(KeystoreError, match=f"{missing}: password file not found"):
        read_password(password_file=missing)
    empty = tmp_path / "empty-pw"
    empty.write_text("\n")
    with pytest.raises(KeystoreError, match="is empty"):
        read_password(password_file=empty)

    monkeypatch.setenv("OTHER_PW", "")
    with pytest.raises(KeystoreError, match="OTHER_PW is set but empty"):
        read_password(env_var="OTHER_PW")


# --- task keys ------------------------------------------------------------------------------------------


def test_task_key_validation_and_equality(key: TaskKey) -> None:
    assert TaskKey(key.secret) == key
    assert TaskKey.generate() != key
    with pytest.raises(UsageError):
        TaskKey(b"short")


def test_wrap_unwrap(identity: MemberIdentity, key: TaskKey) -> None:
    context = b"chain 1337 / contract / task 7"
    wrapped = wrap_task_key(key, identity.enc_public_key, context=context)
    assert len(wrapped) == WRAPPED_KEY_SIZE == 92
    assert unwrap_task_key(wrapped, identity.x25519_private(), context=context) == key
    # Fresh ephemeral key each time.
    assert wrap_task_key(key, identity.enc_public_key, context=context) != wrapped


def test_unwrap_fails_for_other_member_or_context(identity: MemberIdentity, key: TaskKey) -> None:
    context = b"task 7"
    wrapped = wrap_task_key(key, identity.enc_public_key, context=context)
    other = new_identity("bank-2")
    for recipient, ctx_bytes in (
        (other.x25519_private(), context),
        (identity.x25519_private(), b"task 8"),
        (identity.x25519_private(), b""),
        (dataclasses.replace(identity, enc_key_version=2).x25519_private(), context),
    ):
        with pytest.raises(DecryptionError, match="task key does not unwrap with this member's key"):
            unwrap_task_key(wrapped, recipient, context=ctx_bytes)
    for i in range(len(wrapped)):
        tampered = bytearray(wrapped)
        tampered[i] ^= 0x01
        with pytest.raises(DecryptionError):
            unwrap_task_key(bytes(tampered), identity.x25519_private(), context=context)
    with pytest.raises(DecryptionError):
        unwrap_task_key(wrapped[:-1], identity.x25519_private(), context=context)
    with pytest.raises(DecryptionError):  # all-zero ephemeral key: low-order point
        unwrap_task_key(bytes(92), identity.x25519_private(), context=context)


def test_wrap_rejects_bad_public_key(key: TaskKey) -> None:
    with pytest.raises(UsageError):
        wrap_task_key(key, b"\x01" * 31, context=b"")
    with pytest.raises(UsageError):
        wrap_task_key(key, bytes(32), context=b"")  # low-order point


# --- blobs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 2, 15, 16, 17, 1000, 65_537])
def test_seal_open_round_trip(key: TaskKey, size: int) -> None:
    plaintext = os.urandom(size)
    blob = seal(key, plaintext, ctx())
    assert isinstance(blob, bytes)
    assert blob.startswith(BLOB_MAGIC) and len(blob) == size + BLOB_OVERHEAD
    assert open_blob(key, blob, ctx()) == plaintext
    assert open_blob(key, bytearray(blob), ctx()) == plaintext
    assert open_blob(key, memoryview(blob), ctx()) == plaintext


def test_seal_is_standard_aes_gcm(key: TaskKey) -> None:
    """Chunked in-place encryption yields exactly what one-shot AES-GCM gives (so any tool can open it)."""
    plaintext = os.urandom(10_000)
    blob = seal(key, plaintext, ctx())
    enc_key = blobs_module._subkey(key, blobs_module._ENC_INFO)
    assert AESGCM(enc_key).encrypt(blob[4:16], plaintext, ctx().associated_data()) == blob[16:]


def test_chunked_path_matches(key: TaskKey, monkeypatch: pytest.MonkeyPatch) -> None:
    """Payloads beyond AESGCM's per-call limit go through the same chunk loop; exercise it small."""
    plaintext = os.urandom(10_007)
    reference = seal(key, plaintext, ctx(), deterministic=True)
    monkeypatch.setattr(blobs_module, "_CHUNK_SIZE", 1000)
    chunked = seal(key, plaintext, ctx(), deterministic=True)
    assert chunked == reference
    assert open_blob(key, chunked, ctx()) == plaintext
    tampered = bytearray(chunked)
    tampered[5000] ^= 1
    with pytest.raises(DecryptionError):
        open_blob(key, bytes(tampered), ctx())


def test_large_blob_round_trip(key: TaskKey) -> None:
    """Big enough for the huge-page path of the output buffer; results are distinct, intact objects."""
    plaintext = os.urandom(9 * 1024 * 1024 + 5)
    blob = seal(key, plaintext, ctx(kind="model"), deterministic=True)
    again = seal(key, plaintext, ctx(kind="model"), deterministic=True)
    assert blob == again and blob is not again
    assert hash(blob) == hash(bytes(blob))
    assert open_blob(key, blob, ctx(kind="model")) == plaintext


def test_seal_accepts_buffers(key: TaskKey) -> None:
    plaintext = os.urandom(4096)
    assert open_blob(key, seal(key, memoryview(plaintext), ctx()), ctx()) == plaintext
    assert open_blob(key, seal(key, bytearray(plaintext), ctx()), ctx()) == plaintext


def test_tampering_any_byte_fails(key: TaskKey) -> None:
    blob = seal(key, os.urandom(64), ctx())
    for i in range(len(blob)):
        tampered = bytearray(blob)
        tampered[i] ^= 0x80
        with pytest.raises(DecryptionError):
            open_blob(key, bytes(tampered), ctx())
    with pytest.raises(DecryptionError, match="too short"):
        open_blob(key, blob[: BLOB_OVERHEAD - 1], ctx())
    with pytest.raises(DecryptionError):
        open_blob(key, blob[:-1], ctx())
    with pytest.raises(DecryptionError):
        open_blob(key, blob + b"\x00", ctx())


def test_wrong_key_fails(key: TaskKey) -> None:
    blob = seal(key, b"weights", ctx())
    with pytest.raises(DecryptionError, match="does not authenticate"):
        open_blob(TaskKey.generate(), blob, ctx())


@pytest.mark.parametrize(
    "change",
    [
        {"round": 4},
        {"sender": OTHER},
        {"kind": "model"},
        {"task_id": 8},
        {"contract": OTHER},
        {"chain_id": 1},
    ],
)
def test_blob_is_bound_to_its_context(key: TaskKey, change: dict[str, object]) -> None:
    blob = seal(key, b"an update for round 3", ctx())
    with pytest.raises(DecryptionError) as info:
        open_blob(key, blob, ctx(**change))
    message = str(info.value)
    other = ctx(**change)
    assert other.kind in message and f"round {other.round}" in message and other.sender in message
    assert "\n" not in message


def test_address_case_does_not_matter(key: TaskKey) -> None:
    blob = seal(key, b"x", ctx(sender="0x" + "AB" * 20))
    assert open_blob(key, blob, ctx(sender="0x" + "ab" * 20)) == b"x"


def test_associated_data_is_unambiguous() -> None:
    contexts = [
        ctx(),
        ctx(round=4),
        ctx(task_id=3, round=7),
        ctx(chain_id=0),
        ctx(kind="updat"),
        ctx(kind="update2"),
        ctx(sender=CONTRACT, contract=SENDER),
        ctx(chain_id=2**64),
    ]
    encodings = [c.associated_data() for c in contexts]
    assert len(set(encodings)) == len(encodings)


@pytest.mark.parametrize(
    "change",
    [
        {"round": -1},
        {"chain_id": 2**256},
        {"sender": "0x1234"},
        {"contract": "5a" * 20},
        {"kind": ""},
        {"kind": "a b"},
        {"task_id": True},
    ],
)
def test_context_validation(change: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        ctx(**change)


def test_deterministic_seal(key: TaskKey) -> None:
    model = os.urandom(5000)
    a = seal(key, model, ctx(kind="model"), deterministic=True)
    b = seal(key, bytes(model), ctx(kind="model"), deterministic=True)
    assert a == b and content_address(a) == content_address(b)
    assert open_blob(key, a, ctx(kind="model")) == model

    changed = bytearray(model)
    changed[-1] ^= 1
    assert seal(key, bytes(changed), ctx(kind="model"), deterministic=True) != a
    assert seal(key, model, ctx(kind="model", round=4), deterministic=True)[4:16] != a[4:16]
    assert seal(TaskKey.generate(), model, ctx(kind="model"), deterministic=True) != a


def test_random_seal_differs_each_time(key: TaskKey) -> None:
    blobs = {seal(key, b"same plaintext", ctx()) for _ in range(20)}
    assert len(blobs) == 20
    assert len({b[4:16] for b in blobs}) == 20


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_open_blob_on_arbitrary_bytes_only_raises_decryption_error(data: bytes) -> None:
    key = TaskKey(b"\x07" * 32)
    with pytest.raises(DecryptionError):
        open_blob(key, data, ctx())
    with pytest.raises(DecryptionError):
        open_blob(key, BLOB_MAGIC + data, ctx())


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=300), deterministic=st.booleans())
def test_seal_open_property(data: bytes, deterministic: bool) -> None:
    key = TaskKey(b"\x09" * 32)
    assert open_blob(key, seal(key, data, ctx(), deterministic=deterministic), ctx()) == data


def test_oversized_payload_refused(key: TaskKey, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blobs_module, "MAX_PLAINTEXT_SIZE", 10)
    with pytest.raises(UsageError, match="exceeds the AES-GCM limit"):
        seal(key, b"x" * 11, ctx())


# --- hashing --------------------------------------------------------------------------------------------


def test_content_address_and_hex() -> None:
    digest = content_address(b"abc")
    assert digest.hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    text = to_hex(digest)
    assert text == "0x" + digest.hex()
    assert from_hex(text) == digest
    assert from_hex(digest.hex().upper()) == digest
    for bad in ("0x1234", "0x" + "zz" * 32, "", "0x" + "00" * 33):
        with pytest.raises(UsageError, match="not a 32-byte hex hash"):
            from_hex(bad)


def test_x25519_private_type(identity: MemberIdentity) -> None:
    assert isinstance(identity.x25519_private(), X25519PrivateKey)
