"""Token -> node schemes that jobsync's explicit table is compared against.

Each scheme is written here from its published description (Jump consistent
hashing, Maglev, rendezvous and ring hashing, with and without bounded loads);
none is copied
from an implementation.  All of them are pure Python and deterministic: keys
come from blake2b of the token id (or of the node name), and nothing reads a
global random state.

Every scheme has the same two-level API:

- ``assign(keys, nodes) -> list[str]``: the owner of every key, computed from
  scratch.  ``keys`` are 64-bit token keys (see ``token_keys``); ``nodes`` is
  the live membership *in arrival order* (the order only matters to Jump,
  whose bucket numbers are positions, and to bounded loads, where the key
  order is the arrival order of the keys).
- ``initial(keys, nodes) -> State`` and ``update(state, nodes) -> State``:
  the same mapping maintained across membership changes.  ``update`` never
  mutates its argument.  For the stateless schemes ``update`` is ``assign``
  from scratch; ``Rendezvous`` updates incrementally (same result, cheaper);
  ``JumpHash`` keeps its bucket list, which is real state.

Conventions worth knowing when reading the benchmark:

- ``ModuloHash``, ``Striping`` and ``Maglev`` order the members by name, as a
  membership registry would hand them out (kazoo's partitioner sorts them
  explicitly).
- ``JumpHash`` numbers buckets in arrival order.  ``removal="end"`` is the
  algorithm as published: buckets can only be removed at the end, and a
  replaced member hands its bucket number to its replacement (operator-managed
  stable slots, like StatefulSet ordinals).  ``removal="renumber"`` removes a
  member anywhere and renumbers the buckets after it, which is what a
  stateless user of Jump has to do; it moves about half of all keys.
- ``Maglev`` uses a 65537-slot table for every token count.  The table size
  must be large relative to the number of *nodes* (the paper asks for
  M >= 100 N), not the number of tokens: a smaller prime for small T would
  only add disruption, so we don't.  At N = 1000 the 65537 table is only
  65 N, as in the Maglev paper's own simulation.
- ``HashRing`` (and the bounded-load ring) memoises each node's points, as
  a running ring keeps them; a membership change re-sorts the points and
  looks every key up again.
- ``BoundedLoadRing`` places keys in arrival order (the order of ``keys``)
  on a v=32 ring, each on the first node clockwise whose load is below
  ``ceil((1 + eps) * keys / nodes)``.  After a membership change the whole
  placement is recomputed in the same arrival order, which is the
  history-independent reading of Mirrokni et al.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Literal, Protocol

import xxhash

MASK64 = (1 << 64) - 1
Removal = Literal["any", "end", "middle"]

__all__ = [
    "BoundedLoadRing",
    "HashRing",
    "JumpHash",
    "Maglev",
    "ModuloHash",
    "Rendezvous",
    "Scheme",
    "State",
    "Striping",
    "default_schemes",
    "is_prime",
    "jump_hash",
    "node_key",
    "token_key",
    "token_keys",
]


# --------------------------------------------------------------------------
# keys


def _h64(data: bytes, person: bytes, salt: bytes) -> int:
    digest = hashlib.blake2b(data, digest_size=8, person=person, key=salt).digest()
    return int.from_bytes(digest, "big")


def token_key(token: int, salt: bytes = b"") -> int:
    """The 64-bit key of a token: blake2b-64 of ``str(token)``, keyed by ``salt``."""
    return _h64(str(token).encode(), b"jobsync-token", salt)


def token_keys(total_tokens: int, salt: bytes = b"") -> list[int]:
    """Keys of tokens ``0 .. total_tokens - 1``."""
    return [token_key(t, salt) for t in range(total_tokens)]


def node_key(name: str, purpose: str = "", salt: bytes = b"") -> int:
    """A 64-bit key of a node name; ``purpose`` separates independent hashes."""
    return _h64(f"{purpose}\x00{name}".encode(), b"jobsync-node", salt)


# --------------------------------------------------------------------------
# common API


@dataclass(frozen=True)
class State:
    """The mapping after a membership change, plus whatever the scheme keeps.

    ``owners[i]`` is the owner of ``keys[i]``.  ``extra`` is scheme-private.
    """

    keys: tuple[int, ...]
    nodes: tuple[str, ...]
    owners: list[str]
    extra: object = None


class Scheme(Protocol):
    name: str
    #: Which member a benchmark should remove: any (``"any"``: the cost does
    #: not depend on the position), only the newest (``"end"``), or the
    #: middle one of the arrival order as the representative case (``"middle"``).
    removal: Removal

    def assign(self, keys: Sequence[int], nodes: Sequence[str]) -> list[str]: ...

    def initial(self, keys: Sequence[int], nodes: Sequence[str]) -> State: ...

    def update(self, state: State, nodes: Sequence[str]) -> State: ...


class _Stateless:
    """Mixin: ``initial``/``update`` are ``assign`` from scratch."""

    name: str = ""
    removal: Removal = "any"

    def assign(self, keys: Sequence[int], nodes: Sequence[str]) -> list[str]:
        raise NotImplementedError

    def initial(self, keys: Sequence[int], nodes: Sequence[str]) -> State:
        return State(tuple(keys), tuple(nodes), self.assign(keys, nodes))

    def update(self, state: State, nodes: Sequence[str]) -> State:
        return State(state.keys, tuple(nodes), self.assign(state.keys, nodes))


def _check_nodes(nodes: Sequence[str]) -> None:
    if not nodes:
        raise ValueError("at least one node is needed")
    if len(set(nodes)) != len(nodes):
        raise ValueError("node names must be distinct")


# --------------------------------------------------------------------------
# modulo and striping


class ModuloHash(_Stateless):
    """``owner = sorted(nodes)[key mod N]``: every change remaps almost everything."""

    name = "modulo"

    def assign(self, keys: Sequence[int], nodes: Sequence[str]) -> list[str]:
        _check_nodes(nodes)
        members = sorted(nodes)
        n = len(members)
        return [members[k % n] for k in keys]


class Striping(_Stateless):
    """kazoo's partitioner: sorted members, the i-th key goes to member ``i mod N``.

    Perfectly balanced, but a join or leave shifts the stripe of every key
    after the changed position.
    """

    name = "striping"

    def assign(self, keys: Sequence[int], nodes: Sequence[str]) -> list[str]:
        _check_nodes(nodes)
        members = sorted(nodes)
        n = len(members)
        return [members[i % n] for i in range(len(keys))]


# --------------------------------------------------------------------------
# consistent-hash ring (Karger et al.)


class HashRing(_Stateless):
    """A ring with ``vnodes`` points per node; a key goes to the first point at or after it.

    Point ``i`` of node ``n`` is blake2b-64 of ``"n#i"``; ties between equal
    points (never seen in practice) go to the smaller name.
    """

    removal: Removal = "any"

    def __init__(self, vnodes: int = 32) -> None:
        if vnodes < 1:
            raise ValueError("vnodes must be >= 1")
        self.vnodes = vnodes
        self.name = f"ring-{vnodes}"
        # A running ring keeps its points: hash each node's points once.
        self._memo: dict[str, list[tuple[int, str]]] = {}

    def node_points(self, node: str) -> list[tuple[int, str]]:
        pts = self._memo.get(node)
        if pts is None:
            pts = [(node_key(f"{node}#{i}", "ring"), node) for i in range(self.vnodes)]
            self._memo[node] = pts
        return pts

    def points(self, nodes: Sequence[str]) -> tuple[list[int], list[str]]:
        """The sorted ring: point positions and the node owning each point."""
        _check_nodes(nodes)
        pts = sorted(p for n in nodes for p in self.node_points(n))
        return [p for p, _ in pts], [n for _, n in pts]

    def assign(self, keys: Sequence[int], nodes: Sequence[str]) -> list[str]:
        positions, owners = self.points(nodes)
        size = len(positions)
        return [owners[bisect_right(positions, k) % size] for k in keys]


# --------------------------------------------------------------------------
# rendezvous / highest random weight (Thaler & Ravishankar)


@dataclass(frozen=True)
class _HrwExtra:
    best: list[int]  # the winning score of every key


class Rendezvous:
    """Each key goes to the node with the highest ``h(key, node)``.

    ``h`` is xxh64 of the key's 8 bytes seeded with the node's 64-bit key;
    equal scores go to the smaller name.  ``update`` is incremental: a new
    node only has to beat each key's stored winning score, and only the keys
    of a removed node are re-scored.  It returns exactly what ``assign``
    would.
    """

    name = "hrw"
    removal: Removal = "any"

    @staticmethod
    def _seed(node: str) -> int:
        return node_key(node, "hrw")

    def _full(self, keys: Sequence[int], nodes: Sequence[str]) -> tuple[list[str], list[int]]:
        _check_nodes(nodes)
        members = sorted(nodes)
        seeds = [self._seed(n) for n in members]
        width = len(members)
        h = xxhash.xxh64_intdigest
        owners: list[str] = []
        best: list[int] = []
        for k in keys:
            scores = list(map(h, repeat(k.to_bytes(8, "big"), width), seeds))
            top = max(scores)
            owners.append(members[scores.index(top)])
            best.append(top)
        return owners, best

    def assign(self, keys: Sequence[int], nodes: Sequence[str]) -> list[str]:
        return self._full(keys, nodes)[0]

    def initial(self, keys: Sequence[int], nodes: Sequence[str]) -> State:
        owners, best = self._full(keys, nodes)
        return State(tuple(keys), tuple(nodes), owners, _HrwExtra(best))

    def update(self, state: State, nodes: Sequence[str]) -> State:
        _check_nodes(nodes)
        assert isinstance(state.extra, _HrwExtra)
        old, new = set(state.nodes), set(nodes)
        gone, added = old - new, sorted(new - old)
        owners, best = list(state.owners), list(state.extra.best)
        keys = state.keys
        h = xxhash.xxh64_intdigest
        if gone:
            # Re-score the orphaned keys against the surviving old members.
            survivors = sorted(old & new)
            if survivors:
                seeds = [self._seed(n) for n in survivors]
                width = len(survivors)
                for i, owner in enumerate(owners):
                    if owner in gone:
                        scores = list(map(h, repeat(keys[i].to_bytes(8, "big"), width), seeds))
                        top = max(scores)
                        owners[i] = survivors[scores.index(top)]
                        best[i] = top
            else:
                return self.initial(keys, nodes)
        for node in added:
            seed = self._seed(node)
            for i, score in enumerate(map(h, (k.to_bytes(8, "big") for k in keys), repeat(seed))):
                b = best[i]
                if score > b or (score == b and node < owners[i]):
                    best[i] = score
                    owners[i] = node
        return State(keys, tuple(nodes), owners, _HrwExtra(best))


# --------------------------------------------------------------------------
# jump consistent hash (Lamping & Veach 2014)

_JUMP_MULT = 2862933555777941757


def jump_hash(key: int, buckets: int) -> int:
    """The bucket in ``[0, buckets)`` of a 64-bit key, per the paper's pseudo-code.

    A linear congruential generator drives a sequence of candidate jumps;
    the last jump below ``buckets`` is the answer.
    """
    if buckets < 1:
        raise ValueError("buckets must be >= 1")
    b, j = -1, 0
    key &= MASK64
    while j < buckets:
        b = j
        key = (key * _JUMP_MULT + 1) & MASK64
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


class JumpHash:
    """Jump over a bucket list kept in arrival order.

    ``removal="end"``: a new member takes a freed bucket number if a member
    left in the same change, else the next number at the end; a member may
    leave without replacement only from the end (anything else raises
    ``ValueError``: the algorithm does not support it).
    ``removal="renumber"``: a leaving member is cut out of the list and the
    members after it shift down one bucket.
    """

    def __init__(self, removal: Literal["end", "renumber"] = "end") -> None:
        self.mode = removal
        self.removal: Removal = "end" if removal == "end" else "middle"
        self.name = "jump" if removal == "end" else "jump-middle"

    def assign(self, keys: Sequence[int], nodes: Sequence[str]) -> list[str]:
        _check_nodes(nodes)
        n = len(nodes)
        out: list[str] = []
        append = out.append
        mult, mask, scale = _JUMP_MULT, MASK64, float(1 << 31)
        for k in keys:  # jump_hash, inlined: this loop is the benchmark's hot spot
            b, j, x = -1, 0, k
            while j < n:
                b = j
                x = (x * mult + 1) & mask
                j = int((b + 1) * (scale / ((x >> 33) + 1)))
            append(nodes[b])
        return out

    def initial(self, keys: Sequence[int], nodes: Sequence[str]) -> State:
        buckets = tuple(nodes)
        return State(tuple(keys), tuple(nodes), self.assign(keys, buckets), buckets)

    def next_buckets(self, buckets: Sequence[str], nodes: Sequence[str]) -> tuple[str, ...]:
        """The bucket list after the membership becomes ``nodes``."""
        _check_nodes(nodes)
        live = set(nodes)
        known = set(buckets)
        added = [n for n in nodes if n not in known]
        if self.mode == "renumber":
            return tuple([b for b in buckets if b in live] + added)
        slots: list[str | None] = [b if b in live else None for b in buckets]
        pending = iter(added)
        for i, b in enumerate(slots):
            if b is None:
                nxt = next(pending, None)
                if nxt is None:
                    break
                slots[i] = nxt
        slots.extend(pending)
        while slots and slots[-1] is None:
            slots.pop()
        if any(s is None for s in slots):
            raise ValueError("jump consistent hash can only remove buckets at the end")
        return tuple(s for s in slots if s is not None)

    def update(self, state: State, nodes: Sequence[str]) -> State:
        assert isinstance(state.extra, tuple)
        buckets = self.next_buckets(state.extra, nodes)
        return State(state.keys, tuple(nodes), self.assign(state.keys, buckets), buckets)


# --------------------------------------------------------------------------
# Maglev (Eisenbud et al., NSDI'16)


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


class Maglev(_Stateless):
    """A lookup table of prime size M filled from per-node permutations.

    Node i's permutation is ``(offset_i + j * skip_i) mod M`` with offset and
    skip from two independent hashes of its name; the nodes (sorted by name)
    take turns claiming the next free slot of their permutation until the
    table is full, so every node gets M/N slots, give or take one.  A key
    looks up ``table[key mod M]``.
    """

    def __init__(self, table_size: int = 65537) -> None:
        if not is_prime(table_size):
            raise ValueError(f"Maglev's table size must be prime, got {table_size}")
        self.table_size = table_size
        self.name = "maglev" if table_size == 65537 else f"maglev-{table_size}"

    def table(self, nodes: Sequence[str]) -> tuple[list[str], list[int]]:
        """The members (sorted) and the table of member indices."""
        _check_nodes(nodes)
        members = sorted(nodes)
        m = self.table_size
        n = len(members)
        if n > m:
            raise ValueError("Maglev needs at least as many slots as nodes")
        offsets = [node_key(x, "maglev-offset") % m for x in members]
        skips = [node_key(x, "maglev-skip") % (m - 1) + 1 for x in members]
        position = list(offsets)  # the next candidate slot of each permutation
        entry = [-1] * m
        filled = 0
        while True:
            for i in range(n):
                c = position[i]
                skip = skips[i]
                while entry[c] >= 0:
                    c += skip
                    if c >= m:
                        c -= m
                entry[c] = i
                c += skip
                position[i] = c - m if c >= m else c
                filled += 1
                if filled == m:
                    return members, entry

    def assign(self, keys: Sequence[int], nodes: Sequence[str]) -> list[str]:
        members, entry = self.table(nodes)
        m = self.table_size
        return [members[entry[k % m]] for k in keys]


# --------------------------------------------------------------------------
# consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam)


class BoundedLoadRing(_Stateless):
    """Ring placement where no node may exceed ``ceil((1 + eps) * keys / nodes)``.

    Keys are placed in the order given (their arrival order); a key whose
    first node clockwise is full walks on to the next point whose node has
    room.  ``max/avg <= 1 + eps`` always holds (up to the ceiling).
    """

    def __init__(self, eps: float = 0.25, vnodes: int = 32) -> None:
        if eps <= 0:
            raise ValueError("eps must be > 0")
        self.eps = eps
        self.ring = HashRing(vnodes)
        self.name = f"bounded-{eps:g}"

    def capacity(self, keys: int, nodes: int) -> int:
        return math.ceil((1 + self.eps) * keys / nodes)

    def assign(self, keys: Sequence[int], nodes: Sequence[str]) -> list[str]:
        positions, point_owner = self.ring.points(nodes)
        size = len(positions)
        cap = self.capacity(len(keys), len(nodes))
        load = dict.fromkeys(nodes, 0)
        out: list[str] = []
        for k in keys:
            i = bisect_right(positions, k) % size
            owner = point_owner[i]
            while load[owner] >= cap:
                i = i + 1 if i + 1 < size else 0
                owner = point_owner[i]
            load[owner] += 1
            out.append(owner)
        return out


# --------------------------------------------------------------------------


def default_schemes() -> list[Scheme]:
    """The schemes the benchmark compares, in table order."""
    return [
        ModuloHash(),
        Striping(),
        HashRing(32),
        HashRing(160),
        Rendezvous(),
        JumpHash("end"),
        JumpHash("renumber"),
        Maglev(65537),
        BoundedLoadRing(0.25, 32),
    ]
