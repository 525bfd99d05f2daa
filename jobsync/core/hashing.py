"""Task -> token: ``token = H(canonical(task_id)) mod total_tokens``.

Law: the token of a task never changes while ``total_tokens`` and the hash
name stay the same, on every machine and in every language that implements
the hash.  ``canonical(x)`` is ``str(x)`` encoded UTF-8, so ``1`` and ``'1'``
share a token (existing deployments rely on it).

Hashes (docs/PROTOCOL.md carries golden vectors for each):

- ``xxh3`` (default): XXH3-64 with seed 0 of the canonical bytes, as an
  unsigned 64-bit integer.  Fast, and available in every mainstream language.
- ``md5``: the whole 128-bit digest read big-endian as an integer.
- ``sha256``: the first 8 bytes of the digest, big-endian.
- ``double_sha256``: the first 8 bytes of sha256(sha256(bytes)), big-endian.

The last three are bit-identical to earlier jobsync releases, so a running
deployment can move to this library without re-mapping its tasks.

``token_for`` validates its arguments; ``token_function`` does it once and
returns a flat closure for hot paths (``can_claim_task``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import xxhash

from jobsync.core.errors import InvalidHashFunction, InvalidTaskId, InvalidTokenCount

DEFAULT_HASH = "xxh3"
DEFAULT_TOTAL_TOKENS = 10_000

_xxh3 = xxhash.xxh3_64_intdigest
_md5 = hashlib.md5
_sha256 = hashlib.sha256
_from_bytes = int.from_bytes


def _hash_xxh3(data: bytes) -> int:
    return _xxh3(data)


def _hash_md5(data: bytes) -> int:
    return _from_bytes(_md5(data).digest(), "big")


def _hash_sha256(data: bytes) -> int:
    return _from_bytes(_sha256(data).digest()[:8], "big")


def _hash_double_sha256(data: bytes) -> int:
    return _from_bytes(_sha256(_sha256(data).digest()).digest()[:8], "big")


HASH_FUNCTIONS: dict[str, Callable[[bytes], int]] = {
    "xxh3": _hash_xxh3,
    "md5": _hash_md5,
    "sha256": _hash_sha256,
    "double_sha256": _hash_double_sha256,
}


def validate_total_tokens(total_tokens: object) -> int:
    """Return ``total_tokens`` if it is a positive int, else raise InvalidTokenCount."""
    if isinstance(total_tokens, bool) or not isinstance(total_tokens, int) or total_tokens < 1:
        raise InvalidTokenCount(f"total_tokens must be a positive integer, got {total_tokens!r}")
    return total_tokens


def validate_hash_function(hash_function: object) -> str:
    """Return the hash name if jobsync knows it, else raise InvalidHashFunction."""
    if not isinstance(hash_function, str) or hash_function not in HASH_FUNCTIONS:
        known = ", ".join(sorted(HASH_FUNCTIONS))
        raise InvalidHashFunction(f"unknown hash function {hash_function!r}; known: {known}")
    return hash_function


def canonical(task_id: object) -> str:
    """The canonical string of a task id: ``str(task_id)``.  Refuses ids whose str fails."""
    if isinstance(task_id, str):
        return task_id
    try:
        return str(task_id)
    except Exception as exc:
        raise InvalidTaskId(f"task id of type {type(task_id).__name__} has no str()") from exc


def canonical_bytes(task_id: object) -> bytes:
    """``canonical(task_id)`` encoded UTF-8; refuses strings with lone surrogates."""
    text = canonical(task_id)
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise InvalidTaskId(f"task id {text!r} is not encodable as UTF-8") from exc


def token_function(
    total_tokens: int = DEFAULT_TOTAL_TOKENS, hash_function: str = DEFAULT_HASH
) -> Callable[[object], int]:
    """Return ``f(task_id) -> token`` with the arguments validated once.

    The closure is the hot path: one ``str``, one encode, one hash, one mod.
    """
    total = validate_total_tokens(total_tokens)
    name = validate_hash_function(hash_function)
    digest = HASH_FUNCTIONS[name]
    if name == "xxh3":
        xxh3 = _xxh3

        def token_xxh3(task_id: object) -> int:
            try:
                return xxh3(str(task_id).encode()) % total
            except UnicodeEncodeError:
                return digest(canonical_bytes(task_id)) % total

        return token_xxh3

    def token_other(task_id: object) -> int:
        return digest(canonical_bytes(task_id)) % total

    return token_other


def token_for(
    task_id: object, total_tokens: int = DEFAULT_TOTAL_TOKENS, hash_function: str = DEFAULT_HASH
) -> int:
    """The token of ``task_id``: ``H(str(task_id).encode('utf-8')) mod total_tokens``.

    Raises InvalidTokenCount for a non-positive ``total_tokens`` and
    InvalidHashFunction for an unknown ``hash_function``.
    """
    digest = HASH_FUNCTIONS.get(hash_function) if isinstance(hash_function, str) else None
    if digest is None:
        validate_hash_function(hash_function)
    if type(total_tokens) is not int or total_tokens < 1:
        validate_total_tokens(total_tokens)
    assert digest is not None
    return digest(canonical_bytes(task_id)) % total_tokens
