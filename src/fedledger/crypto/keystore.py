"""Member identities kept in standard, geth-compatible Ethereum keystore files.

One secret per member: the Ethereum private key signs every transaction, and the member's X25519
encryption key is derived from it with HKDF. So a member backs up, moves and unlocks exactly one file that
works with every Ethereum tool (geth, clef, foundry's ``cast wallet``), and rotating the encryption key is
just a new ``enc_key_version``. fedledger's own metadata sits in an extra top-level ``"fedledger"`` field,
which other tools ignore.

Passwords come from a file or an environment variable, never from the command line (where ``ps`` and the
shell history would show them), and neither passwords nor keys ever appear in messages or reprs.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_account import Account
from eth_account.signers.local import LocalAccount

from fedledger.errors import KeystoreError, UsageError

PASSWORD_ENV_VAR = "FEDLEDGER_PASSWORD"
_SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_X25519_INFO = b"fedledger/x25519/v"
# Work factors: the standard ones (what geth writes; scrypt n=2**18 takes about a second) and light ones
# for simulations and tests, where dozens of throwaway keystores are written and read.
_STANDARD_WORK = {"scrypt": 2**18, "pbkdf2": 1_000_000}
_LIGHT_WORK = {"scrypt": 2**12, "pbkdf2": 4096}

KdfName = Literal["scrypt", "pbkdf2"]


@dataclass(frozen=True, repr=False)
class MemberIdentity:
    """A member's signing account plus the metadata fedledger keeps beside it."""

    name: str
    account: LocalAccount
    enc_key_version: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise UsageError("a member identity needs a non-empty name")
        if isinstance(self.enc_key_version, bool) or not isinstance(self.enc_key_version, int):
            raise UsageError("enc_key_version must be an integer")
        if self.enc_key_version < 1:
            raise UsageError(f"enc_key_version must be >= 1, got {self.enc_key_version}")

    @property
    def address(self) -> str:
        """The member's checksummed Ethereum address (its identity on chain)."""
        return str(self.account.address)

    def x25519_private(self) -> X25519PrivateKey:
        """The member's X25519 key, derived from the Ethereum key so one keystore holds one secret.

        HKDF-SHA256 with ``info = b"fedledger/x25519/v" + version`` separates it from the signing key and
        lets a member rotate it (bump ``enc_key_version``) without changing its address.
        """
        info = _X25519_INFO + str(self.enc_key_version).encode("ascii")
        seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
            bytes(self.account.key)
        )
        return X25519PrivateKey.from_private_bytes(seed)

    @property
    def enc_public_key(self) -> bytes:
        """The 32 raw bytes of the X25519 public key that is registered on chain."""
        return (
            self.x25519_private()
            .public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )

    def __repr__(self) -> str:
        return (
            f"MemberIdentity(name={self.name!r}, address={self.address}, "
            f"enc_key_version={self.enc_key_version})"
        )


def new_identity(name: str) -> MemberIdentity:
    """Create a member identity with a fresh private key from the OS CSPRNG."""
    while True:
        raw = secrets.token_bytes(32)
        if 0 < int.from_bytes(raw, "big") < _SECP256K1_ORDER:  # rejection, so the key is uniform
            break
    return MemberIdentity(name=name, account=Account.from_key(raw), enc_key_version=1)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable; some filesystems do not allow opening a directory, which is harmless."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_keystore(
    path: Path,
    identity: MemberIdentity,
    password: str,
    *,
    kdf: KdfName = "scrypt",
    light: bool = False,
    overwrite: bool = False,
) -> None:
    """Write ``identity`` as an Ethereum v3 keystore (plus a ``"fedledger"`` field), mode 0600.

    ``light=True`` uses a low work factor (scrypt n=2**12): for simulations and tests only. The file is
    written to a temporary name, fsynced and renamed, so a crash never leaves a half-written key. An
    existing keystore is only replaced with ``overwrite=True``, because replacing it loses that member's
    key for good.
    """
    path = Path(path)
    if kdf not in _STANDARD_WORK:
        raise UsageError(f"{path}: unsupported keystore KDF {kdf!r} (use 'scrypt' or 'pbkdf2')")
    if not isinstance(password, str) or not password:
        raise KeystoreError(f"{path}: refusing to write a keystore with an empty password")
    if not overwrite and path.exists():
        raise KeystoreError(f"{path}: a keystore already exists there; refusing to overwrite it")
    work = (_LIGHT_WORK if light else _STANDARD_WORK)[kdf]
    document: dict[str, Any] = Account.encrypt(identity.account.key, password, kdf=kdf, iterations=work)
    document["fedledger"] = {"name": identity.name, "enc_key_version": identity.enc_key_version}
    payload = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")

    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask, only the owner may read a key
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise KeystoreError(f"{path}: cannot write keystore ({exc.strerror or exc})") from None
    _fsync_dir(path.parent)


def _is_v3_keystore(document: object) -> bool:
    if not isinstance(document, dict) or document.get("version") != 3:
        return False
    crypto = document.get("crypto", document.get("Crypto"))
    return isinstance(crypto, dict) and all(k in crypto for k in ("ciphertext", "kdf", "kdfparams", "mac"))


def load_keystore(path: Path, password: str) -> MemberIdentity:
    """Unlock a keystore. Every failure is one :class:`KeystoreError` line that names the file.

    Plain geth keystores without a ``"fedledger"`` field load too: the name defaults to the file stem and
    the encryption key version to 1.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeystoreError(f"{path}: keystore not found") from None
    except UnicodeDecodeError:
        raise KeystoreError(f"{path}: not a JSON keystore (not UTF-8 text)") from None
    except OSError as exc:
        raise KeystoreError(f"{path}: cannot read keystore ({exc.strerror or exc})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeystoreError(f"{path}: not a JSON keystore ({exc.msg} at line {exc.lineno})") from None
    if not _is_v3_keystore(document):
        raise KeystoreError(f"{path}: not an Ethereum v3 keystore (expected version 3 and a crypto section)")

    try:
        private_key = Account.decrypt(document, password)
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise KeystoreError(f"{path}: wrong password (MAC mismatch)") from None
        raise KeystoreError(f"{path}: malformed v3 keystore (bad cipher or KDF parameters)") from None
    except Exception:  # eth-keyfile raises KeyError/TypeError/AssertionError on malformed parameters
        raise KeystoreError(f"{path}: malformed v3 keystore (unsupported cipher or KDF parameters)") from None
    try:
        account: LocalAccount = Account.from_key(private_key)
    except Exception:
        raise KeystoreError(f"{path}: keystore holds an invalid secp256k1 private key") from None

    recorded = document.get("address")
    if isinstance(recorded, str) and recorded.lower().removeprefix("0x") != account.address.lower()[2:]:
        raise KeystoreError(f"{path}: the keystore's address field does not match the key it holds")

    meta = document.get("fedledger", {})
    name = meta.get("name", path.stem) if isinstance(meta, dict) else None
    version = meta.get("enc_key_version", 1) if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name.strip():
        raise KeystoreError(f"{path}: 'fedledger.name' must be a non-empty string")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise KeystoreError(f"{path}: 'fedledger.enc_key_version' must be an integer >= 1")
    return MemberIdentity(name=name, account=account, enc_key_version=version)


def read_password(*, env_var: str = PASSWORD_ENV_VAR, password_file: Path | None = None) -> str:
    """Find the keystore password: ``password_file`` if given, else the ``env_var`` environment variable.

    One trailing newline is stripped from the file (editors add one); nothing else, since spaces may be
    part of a password. Empty passwords are refused.
    """
    if password_file is not None:
        password_file = Path(password_file)
        try:
            text = password_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise KeystoreError(f"{password_file}: password file not found") from None
        except UnicodeDecodeError:
            raise KeystoreError(f"{password_file}: password file is not UTF-8 text") from None
        except OSError as exc:
            raise KeystoreError(
                f"{password_file}: cannot read password file ({exc.strerror or exc})"
            ) from None
        if text.endswith("\r\n"):
            text = text[:-2]
        elif text.endswith("\n"):
            text = text[:-1]
        if not text:
            raise KeystoreError(f"{password_file}: password file is empty")
        return text
    value = os.environ.get(env_var)
    if value is None:
        raise KeystoreError(f"no keystore password: set {env_var} or pass --password-file")
    if not value:
        raise KeystoreError(f"{env_var} is set but empty; set it to the keystore password")
    return value
