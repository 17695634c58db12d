"""Merkle tree hashing, proofs and verification for the issued-certificate log (RFC 9162 §2.1).

The tree is the Certificate Transparency tree: RFC 9162 §2.1.1 (unchanged from RFC 6962 §2.1)
with SHA-256,

- empty tree: ``MTH({}) = SHA-256()``;
- leaf: ``SHA-256(0x00 || entry)``;
- interior node: ``SHA-256(0x01 || left || right)``, where the left subtree holds the largest
  power of two of leaves that is smaller than the number of leaves.

Proof generation reads the tree through :class:`NodeReader`, one batched call per proof that
asks for the hashes of *perfect* subtrees (:class:`NodeId`). A perfect subtree is complete and
never changes once its last leaf is appended, so the storage layer can persist the nodes that
:meth:`CompactRange.extend` reports as completed, in the same transaction as the leaves, and
answer every proof with ``O(log n)`` primary-key reads. An async storage layer asks
:func:`inclusion_node_ids` / :func:`consistency_node_ids` / :func:`frontier_ids` first,
fetches those rows in one query and passes them as a :class:`NodeMap`. :class:`LeafHashReader`
answers the same questions from a list of leaf hashes (tests, exports, small trees).

:class:`CompactRange` is the right edge of the tree: the roots of the perfect subtrees whose
sizes are the binary digits of the tree size (transparency-dev/merkle ``compact.Range``).
Appending a leaf costs ``O(log n)`` hashes amortised ``O(1)``, the tree head follows from it
without reading old leaves, and it is a small value the sequencer can persist.

Pure: no I/O; hashing through :mod:`cryptography`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives import constant_time, hashes

from ca.errors import CaError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_TREE_SIZE",
    "CompactRange",
    "ConsistencyProof",
    "InclusionProof",
    "InvalidProof",
    "LeafHashReader",
    "MerkleError",
    "Node",
    "NodeId",
    "NodeMap",
    "NodeReader",
    "TreeHead",
    "consistency_node_ids",
    "consistency_proof",
    "frontier_ids",
    "inclusion_node_ids",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion_proof",
    "root_hash",
    "tree_head",
    "verify_consistency",
    "verify_inclusion",
]

#: Size of a SHA-256 hash, the only hash of this log (RFC 9162 §2.1.1 with SHA-256).
HASH_SIZE = 32

#: Largest tree this module handles: a PostgreSQL ``bigint`` index, and proofs of ≤ 63 hashes.
MAX_TREE_SIZE = 2**63 - 1

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


class MerkleError(CaError):
    """A Merkle operation was asked something impossible (bad size, index or hash)."""


class InvalidProof(MerkleError):
    """An inclusion or consistency proof does not verify (RFC 9162 §2.1.3.2, §2.1.4.2)."""


def _sha256(*parts: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA256())
    for part in parts:
        digest.update(part)
    return digest.finalize()


#: ``MTH({})``, the root of the empty tree (RFC 9162 §2.1.1).
EMPTY_ROOT = _sha256()


def leaf_hash(entry: bytes) -> bytes:
    """``SHA-256(0x00 || entry)``, the hash of one log entry (RFC 9162 §2.1.1)."""
    return _sha256(_LEAF_PREFIX, bytes(entry))


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``, an interior node (RFC 9162 §2.1.1)."""
    _check_hash(left, "left")
    _check_hash(right, "right")
    return _sha256(_NODE_PREFIX, left, right)


def root_hash(leaf_hashes: Iterable[bytes]) -> bytes:
    """``MTH(D[n])`` over leaf hashes (RFC 9162 §2.1.1), in ``O(n)`` time and ``O(log n)`` space."""
    stack: list[bytes] = []
    for size, leaf in enumerate(leaf_hashes):
        _check_hash(leaf, "leaf hash")
        _push(stack, size, leaf, None)
    return _fold(stack)


def _check_hash(value: object, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise MerkleError(f"{what}: must be {HASH_SIZE} bytes")
    return value


def _check_path(path: Iterable[object], what: str) -> tuple[bytes, ...]:
    """An audit or consistency path as a tuple of node hashes (RFC 9162 §2.1.3.1, §2.1.4.1)."""
    return tuple(_check_hash(item, what) for item in path)


def _check_size(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise MerkleError(f"{what}: must be an integer")
    if not 0 <= value <= MAX_TREE_SIZE:
        raise MerkleError(f"{what}: must be in [0, 2**63 - 1]")
    return value


@dataclass(frozen=True)
class TreeHead:
    """A tree size and its root hash, ``MTH(D[size])`` (RFC 9162 §2.1.1)."""

    size: int
    root: bytes

    def __post_init__(self) -> None:
        _check_size(self.size, "TreeHead.size")
        _check_hash(self.root, "TreeHead.root")
        if self.size == 0 and self.root != EMPTY_ROOT:
            raise MerkleError("TreeHead.root: the empty tree's root is SHA-256 of nothing")


@dataclass(frozen=True)
class InclusionProof:
    """The audit path ``PATH(leaf_index, D[tree_size])``, leaf sibling first (RFC 9162 §2.1.3.1)."""

    leaf_index: int
    tree_size: int
    path: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_size(self.tree_size, "InclusionProof.tree_size")
        _check_size(self.leaf_index, "InclusionProof.leaf_index")
        if self.leaf_index >= self.tree_size:
            raise MerkleError("InclusionProof.leaf_index: must be smaller than tree_size")
        object.__setattr__(self, "path", _check_path(self.path, "InclusionProof.path"))


@dataclass(frozen=True)
class ConsistencyProof:
    """``PROOF(old_size, D[new_size])``, innermost node first (RFC 9162 §2.1.4.1)."""

    old_size: int
    new_size: int
    path: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_size(self.old_size, "ConsistencyProof.old_size")
        _check_size(self.new_size, "ConsistencyProof.new_size")
        if self.old_size > self.new_size:
            raise MerkleError("ConsistencyProof.old_size: must not exceed new_size")
        object.__setattr__(self, "path", _check_path(self.path, "ConsistencyProof.path"))


@dataclass(frozen=True, order=True)
class NodeId:
    """The perfect subtree of ``2**level`` leaves ``[index * 2**level, (index + 1) * 2**level)``.

    Level 0 is a leaf. Same addressing as transparency-dev/merkle ``compact.NodeID``, so a
    storage table keyed by ``(level, index)`` holds every node once.
    """

    level: int
    index: int

    def __post_init__(self) -> None:
        if not isinstance(self.level, int) or not 0 <= self.level < 63:
            raise MerkleError("NodeId.level: must be in [0, 62]")
        if not isinstance(self.index, int) or self.index < 0:
            raise MerkleError("NodeId.index: must be a non-negative integer")
        if self.end > MAX_TREE_SIZE + 1:
            raise MerkleError("NodeId: covers leaves beyond MAX_TREE_SIZE")

    @property
    def begin(self) -> int:
        """Index of the first leaf under this node."""
        return self.index << self.level

    @property
    def end(self) -> int:
        """One past the index of the last leaf under this node."""
        return (self.index + 1) << self.level


@dataclass(frozen=True)
class Node:
    """A perfect subtree and its hash, as reported by :meth:`CompactRange.extend`."""

    id: NodeId
    hash: bytes

    def __post_init__(self) -> None:
        _check_hash(self.hash, "Node.hash")


class NodeReader(Protocol):
    """Read access to the hashes of perfect subtrees, the only thing proof generation needs.

    ``node_hashes`` returns the hash of every requested node, in request order. Every requested
    node lies inside the tree size the caller asked about, so it is complete. Implementations
    raise their own error for a node they do not hold; proof code wraps nothing.
    """

    def node_hashes(self, ids: Sequence[NodeId], /) -> Sequence[bytes]: ...


class LeafHashReader:
    """A :class:`NodeReader` over an in-memory sequence of leaf hashes.

    Every node is recomputed from its leaves (``O(2**level)`` hashes), so use it for tests,
    exports and small trees; production proofs read persisted nodes instead.
    """

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        for leaf in leaf_hashes:
            _check_hash(leaf, "leaf hash")
        self._leaves = leaf_hashes

    def __len__(self) -> int:
        return len(self._leaves)

    def node_hashes(self, ids: Sequence[NodeId], /) -> list[bytes]:
        result = []
        for node in ids:
            if node.end > len(self._leaves):
                raise MerkleError(f"node {node}: beyond the {len(self._leaves)} leaves held")
            result.append(root_hash(self._leaves[node.begin : node.end]))
        return result


class NodeMap:
    """A :class:`NodeReader` over nodes fetched beforehand, e.g. rows of a node table.

    An async storage layer asks :func:`inclusion_node_ids` (or :func:`consistency_node_ids`,
    :func:`frontier_ids`) which nodes a proof needs, fetches them in one query, and hands
    them over as a mapping; proof code then runs without I/O. A missing node raises
    :class:`MerkleError`.
    """

    def __init__(self, nodes: Mapping[NodeId, bytes]) -> None:
        self._nodes = nodes

    def node_hashes(self, ids: Sequence[NodeId], /) -> list[bytes]:
        try:
            return [self._nodes[node] for node in ids]
        except KeyError as exc:
            raise MerkleError(f"node {exc.args[0]}: not among the fetched nodes") from None


def _push(stack: list[bytes], size: int, leaf: bytes, completed: list[Node] | None) -> None:
    """Append leaf number ``size`` to the right edge ``stack`` (one hash per carried bit)."""
    current = leaf
    level = 0
    if completed is not None:
        completed.append(Node(NodeId(0, size), current))
    carry = size
    while carry & 1:
        current = _sha256(_NODE_PREFIX, stack.pop(), current)
        level += 1
        carry >>= 1
        if completed is not None:
            completed.append(Node(NodeId(level, size >> level), current))
    stack.append(current)


def _fold(hashes_left_to_right: Sequence[bytes]) -> bytes:
    """MTH of adjacent perfect subtrees of strictly decreasing size: fold from the right."""
    if not hashes_left_to_right:
        return EMPTY_ROOT
    current = hashes_left_to_right[-1]
    for left in reversed(hashes_left_to_right[:-1]):
        current = _sha256(_NODE_PREFIX, left, current)
    return current


def frontier_ids(size: int) -> tuple[NodeId, ...]:
    """The perfect subtrees of a tree of ``size`` leaves, largest (leftmost) first.

    One per set bit of ``size``: these are the nodes a :class:`CompactRange` holds.
    """
    return _range_ids(0, _check_size(size, "size"))


def _range_ids(begin: int, end: int) -> tuple[NodeId, ...]:
    """Split ``[begin, end)`` into aligned perfect subtrees, left to right.

    For every range that is an RFC 9162 subtree (and so for every range a proof uses), the
    sizes strictly decrease and ``_fold`` of their hashes is ``MTH(D[begin:end])``.
    """
    ids = []
    while begin < end:
        level = (end - begin).bit_length() - 1
        if begin:
            level = min(level, (begin & -begin).bit_length() - 1)
        ids.append(NodeId(level, begin >> level))
        begin += 1 << level
    return tuple(ids)


@dataclass(frozen=True)
class CompactRange:
    """The right edge of a tree of ``size`` leaves: the hashes of :func:`frontier_ids`.

    Immutable: :meth:`extend` returns a new range plus every perfect subtree the new leaves
    completed (leaves included, level 0 first), which is exactly what a node table must store
    for :func:`inclusion_proof` and :func:`consistency_proof` to work at any later size.
    """

    size: int
    hashes: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_size(self.size, "CompactRange.size")
        object.__setattr__(self, "hashes", tuple(self.hashes))
        if len(self.hashes) != self.size.bit_count():
            raise MerkleError("CompactRange.hashes: need one hash per set bit of size")
        for item in self.hashes:
            _check_hash(item, "CompactRange.hashes")

    @classmethod
    def empty(cls) -> CompactRange:
        return cls(0, ())

    @classmethod
    def from_reader(cls, reader: NodeReader, size: int) -> CompactRange:
        """Rebuild the range of a tree of ``size`` leaves from stored nodes (one batched read)."""
        ids = frontier_ids(size)
        return cls(size, tuple(_read(reader, ids)))

    def extend(self, leaf_hashes: Iterable[bytes]) -> tuple[CompactRange, tuple[Node, ...]]:
        """Append leaf hashes in order; returns the new range and the completed nodes."""
        stack = list(self.hashes)
        size = self.size
        completed: list[Node] = []
        for leaf in leaf_hashes:
            _check_hash(leaf, "leaf hash")
            if size >= MAX_TREE_SIZE:
                raise MerkleError("CompactRange: tree is full")
            _push(stack, size, leaf, completed)
            size += 1
        return CompactRange(size, tuple(stack)), tuple(completed)

    def append(self, leaf_hash: bytes) -> tuple[CompactRange, tuple[Node, ...]]:
        """Append one leaf hash; see :meth:`extend`."""
        return self.extend((leaf_hash,))

    def root(self) -> bytes:
        """``MTH(D[size])`` (RFC 9162 §2.1.1)."""
        return _fold(self.hashes)

    def tree_head(self) -> TreeHead:
        return TreeHead(self.size, self.root())


def _read(reader: NodeReader, ids: Sequence[NodeId]) -> list[bytes]:
    if not ids:
        return []
    result = list(reader.node_hashes(ids))
    if len(result) != len(ids):
        raise MerkleError(f"node reader returned {len(result)} hashes for {len(ids)} nodes")
    for item in result:
        _check_hash(item, "node reader hash")
    return result


def _split(width: int) -> int:
    """The largest power of two smaller than ``width`` (``width`` ≥ 2), RFC 9162 §2.1.1."""
    return 1 << ((width - 1).bit_length() - 1)


def _materialise(reader: NodeReader, ranges: Sequence[tuple[int, int]]) -> tuple[bytes, ...]:
    """``MTH(D[begin:end])`` for each range, reading every needed node in one call."""
    wanted = _ids_of(ranges)
    known = dict(zip(wanted, _read(reader, wanted), strict=True))
    return tuple(_fold([known[node] for node in _range_ids(b, e)]) for b, e in ranges)


def tree_head(reader: NodeReader, size: int) -> TreeHead:
    """The tree head at ``size`` from stored nodes: ``popcount(size)`` reads, no leaf scan."""
    return CompactRange.from_reader(reader, size).tree_head()


def _inclusion_ranges(leaf_index: int, tree_size: int) -> list[tuple[int, int]]:
    """Leaf ranges of ``PATH(m, D[n])`` (RFC 9162 §2.1.3.1), leaf sibling first."""
    _check_size(tree_size, "tree_size")
    _check_size(leaf_index, "leaf_index")
    if leaf_index >= tree_size:
        raise MerkleError("leaf_index: must be smaller than tree_size")
    ranges = []
    begin, end = 0, tree_size
    while end - begin > 1:
        k = _split(end - begin)
        if leaf_index < begin + k:
            ranges.append((begin + k, end))
            end = begin + k
        else:
            ranges.append((begin, begin + k))
            begin += k
    ranges.reverse()
    return ranges


def _consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """Leaf ranges of ``SUBPROOF(m, D[n], true)`` (RFC 9162 §2.1.4.1), innermost first."""
    _check_size(old_size, "old_size")
    _check_size(new_size, "new_size")
    if old_size > new_size:
        raise MerkleError("old_size: must not exceed new_size")
    if old_size in (0, new_size):
        return []
    ranges = []
    begin, end, m, complete_left = 0, new_size, old_size, True
    while m != end - begin:
        k = _split(end - begin)
        if m <= k:
            ranges.append((begin + k, end))
            end = begin + k
        else:
            ranges.append((begin, begin + k))
            begin += k
            m -= k
            complete_left = False
    if not complete_left:
        ranges.append((begin, end))
    ranges.reverse()
    return ranges


def _ids_of(ranges: Sequence[tuple[int, int]]) -> tuple[NodeId, ...]:
    return tuple(sorted({node for begin, end in ranges for node in _range_ids(begin, end)}))


def inclusion_node_ids(leaf_index: int, tree_size: int) -> tuple[NodeId, ...]:
    """The stored nodes :func:`inclusion_proof` reads: at most ``2 * log2(tree_size)``.

    For an async storage layer: fetch these in one query, then call :func:`inclusion_proof`
    with a :class:`NodeMap` of the rows.
    """
    return _ids_of(_inclusion_ranges(leaf_index, tree_size))


def consistency_node_ids(old_size: int, new_size: int) -> tuple[NodeId, ...]:
    """The stored nodes :func:`consistency_proof` reads (see :func:`inclusion_node_ids`)."""
    return _ids_of(_consistency_ranges(old_size, new_size))


def inclusion_proof(reader: NodeReader, leaf_index: int, tree_size: int) -> InclusionProof:
    """``PATH(leaf_index, D[tree_size])`` (RFC 9162 §2.1.3.1), leaf sibling first.

    Each path element is ``MTH`` of the sibling subtree on the way from the leaf to the root;
    the nodes come from ``reader`` in one call.
    """
    path = _materialise(reader, _inclusion_ranges(leaf_index, tree_size))
    return InclusionProof(leaf_index, tree_size, path)


def consistency_proof(reader: NodeReader, old_size: int, new_size: int) -> ConsistencyProof:
    """``PROOF(old_size, D[new_size])`` = ``SUBPROOF(m, D[n], true)`` (RFC 9162 §2.1.4.1).

    Empty when ``old_size`` is 0 or equals ``new_size``: every tree extends the empty tree, and
    a tree is consistent with itself (RFC 9162 §2.1.4).
    """
    path = _materialise(reader, _consistency_ranges(old_size, new_size))
    return ConsistencyProof(old_size, new_size, path)


def root_from_inclusion_proof(leaf_hash: bytes, proof: InclusionProof) -> bytes:
    """The root that ``proof`` implies for ``leaf_hash``, RFC 9162 §2.1.3.2 steps 1-5.

    Raises :class:`InvalidProof` when the path has the wrong length for the index and size.
    """
    _check_hash(leaf_hash, "leaf_hash")
    fn, sn = proof.leaf_index, proof.tree_size - 1
    r = leaf_hash
    for p in proof.path:
        if sn == 0:
            raise InvalidProof("inclusion proof is longer than the tree is high")
        if fn & 1 or fn == sn:
            r = _sha256(_NODE_PREFIX, p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = _sha256(_NODE_PREFIX, r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProof("inclusion proof is shorter than the tree is high")
    return r


def verify_inclusion(leaf_hash: bytes, proof: InclusionProof, head: TreeHead) -> None:
    """Check that ``leaf_hash`` is leaf ``proof.leaf_index`` of ``head`` (RFC 9162 §2.1.3.2).

    Raises :class:`InvalidProof` otherwise; returns nothing on success.
    """
    if proof.tree_size != head.size:
        raise InvalidProof("inclusion proof is for another tree size")
    root = root_from_inclusion_proof(leaf_hash, proof)
    if not constant_time.bytes_eq(root, head.root):
        raise InvalidProof("inclusion proof does not lead to the tree head's root")


def verify_consistency(proof: ConsistencyProof, old: TreeHead, new: TreeHead) -> None:
    """Check that ``new`` is an append-only extension of ``old`` (RFC 9162 §2.1.4.2).

    Raises :class:`InvalidProof` otherwise; returns nothing on success.
    """
    if (proof.old_size, proof.new_size) != (old.size, new.size):
        raise InvalidProof("consistency proof is for other tree sizes")
    if old.size == 0 or old.size == new.size:
        if proof.path:
            raise InvalidProof("consistency proof must be empty for these sizes")
        if old.size and not constant_time.bytes_eq(old.root, new.root):
            raise InvalidProof("equal tree sizes with different roots")
        return
    path = list(proof.path)
    if not path:
        raise InvalidProof("consistency proof is empty")
    # Step 2: when old.size is a power of two, the old root is itself a node of the new tree.
    if old.size & (old.size - 1) == 0:
        path.insert(0, old.root)
    fn, sn = old.size - 1, new.size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise InvalidProof("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = _sha256(_NODE_PREFIX, c, fr)
            sr = _sha256(_NODE_PREFIX, c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = _sha256(_NODE_PREFIX, sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProof("consistency proof is too short")
    if not constant_time.bytes_eq(fr, old.root):
        raise InvalidProof("consistency proof does not lead to the old root")
    if not constant_time.bytes_eq(sr, new.root):
        raise InvalidProof("consistency proof does not lead to the new root")
