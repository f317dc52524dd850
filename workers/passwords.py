"""Password hashing with argon2id, as pure functions the thread pool runs.

argon2-cffi's `PasswordHasher()` defaults are RFC 9106's second recommended ("low-memory")
profile: argon2id, t=3, m=64 MiB, p=4. We keep them rather than inventing parameters, and
`needs_rehash` lets a login upgrade stored hashes if a later argon2-cffi raises them.

argon2 runs in C and releases the GIL, so threads (not processes) are the right pool for it.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = ["hash_password", "needs_rehash", "verify_password"]

# Stateless and thread-safe: one instance serves every thread of the pool.
_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    """Return an encoded argon2id hash ("$argon2id$v=19$...") with a fresh random salt."""
    return str(_hasher.hash(password))


def verify_password(password_hash: str, password: str) -> bool:
    """True if `password` matches; False for a wrong password or a malformed hash, never raises."""
    try:
        return bool(_hasher.verify(password_hash, password))
    except (VerificationError, InvalidHashError):
        # VerifyMismatchError is a VerificationError; a hash that is not argon2 at all (or was
        # truncated in the store) is InvalidHashError. Both mean "this password does not log in".
        return False


def needs_rehash(password_hash: str) -> bool:
    """True if the hash was made with other parameters than today's and should be replaced."""
    try:
        return bool(_hasher.check_needs_rehash(password_hash))
    except (InvalidHashError, ValueError):
        # Unparseable: it can never verify, so it certainly does not have today's parameters.
        return True
