"""A blob store in a local directory: ``root/ab/cdef…``, one file per blob, named by its SHA-256.

Writes are atomic (temporary file in the same directory, fsync, rename, fsync of the directory), so a
crash or a full disk never leaves a truncated blob under its final name, and a reader sees either nothing
or the whole blob. Blobs are never modified or deleted once written: the store is append-only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from fedledger.errors import StoreError
from fedledger.store.base import BlobStore, BytesLike, check_address

_TMP_SUFFIX = ".tmp"


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable. Some filesystems refuse fsync on a directory; that is not an error here."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


class LocalBlobStore(BlobStore):
    """Content-addressed files under ``root``, fanned out by the first address byte.

    ``fsync=False`` skips the fsyncs: faster, for simulations whose store is thrown away after the run.
    """

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        super().__init__()
        self.root = Path(root)
        self.fsync = fsync

    @property
    def where(self) -> str:
        return str(self.root)

    def path_for(self, address: bytes) -> Path:
        """The file that holds (or would hold) the blob ``address``."""
        digits = check_address(address).hex()
        return self.root / digits[:2] / digits[2:]

    def location(self, address: bytes) -> str:
        return str(self.path_for(address))

    def _write(self, address: bytes, data: BytesLike) -> bool:
        final = self.path_for(address)
        view = memoryview(data).cast("B")
        try:
            st = os.stat(final)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StoreError(f"cannot write blob 0x{address.hex()} to {final}: {_reason(exc)}") from None
        else:
            # Present with the right size: same content, by its name. (A wrong-sized file can only be a
            # damaged copy placed there by hand; rewriting it repairs the store.)
            if stat.S_ISREG(st.st_mode) and st.st_size == len(view):
                return False

        tmp = final.parent / f".{final.name}.{secrets.token_hex(4)}{_TMP_SUFFIX}"
        try:
            if not final.parent.is_dir():
                final.parent.mkdir(parents=True, exist_ok=True)
                if self.fsync:
                    _fsync_dir(self.root)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                while view:
                    view = view[os.write(fd, view) :]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StoreError(f"cannot write blob 0x{address.hex()} to {final}: {_reason(exc)}") from None
        if self.fsync:
            _fsync_dir(final.parent)
        return True

    def _read(self, address: bytes) -> bytes | None:
        path = self.path_for(address)
        try:
            with open(path, "rb", buffering=0) as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read blob 0x{address.hex()} from {path}: {_reason(exc)}") from None

    def _exists(self, address: bytes) -> bool:
        return self.path_for(address).is_file()
