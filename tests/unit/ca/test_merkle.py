"""RFC 9162 Merkle tree: published vectors, and our proofs checked by independent verifiers.

Independent implementations (not written by this project, see the report for the extras):
- ``pymerkle`` 7 (fmerg/pymerkle): its own RFC 9162-shaped tree, roots, inclusion paths and
  inclusion verification;
- ``tlog-scales`` (florolf/tlog-scales): a line-by-line transcription of RFC 9162 §2.1.3.2 and
  §2.1.4.2 verification, used for inclusion and consistency proofs.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from pymerkle import InclusionProof as PymerkleInclusionProof
from pymerkle import InmemoryTree
from pymerkle import InvalidProof as PymerkleInvalidProof
from pymerkle import verify_inclusion as pymerkle_verify_inclusion
from tlog_scales.tlog import ConsistencyProof as ScalesConsistencyProof
from tlog_scales.tlog import ConsistencyProofInvalid, InclusionProofInvalid
from tlog_scales.tlog import InclusionProof as ScalesInclusionProof

from ca.errors import CaError
from ca.merkle import (
    EMPTY_ROOT,
    CompactRange,
    ConsistencyProof,
    InclusionProof,
    InvalidProof,
    LeafHashReader,
    MerkleError,
    NodeId,
    NodeMap,
    TreeHead,
    consistency_node_ids,
    consistency_proof,
    frontier_ids,
    inclusion_node_ids,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    root_hash,
    tree_head,
    verify_consistency,
    verify_inclusion,
)

# -- Published vectors ---------------------------------------------------------------------------
# Source: transparency-dev/merkle, proof/verify_test.go
# (commit 02194e9afb6c1d95b5381350007963aa70fff472): the RFC 6962 reference vectors from
# google/certificate-transparency, i.e. the eight leaves, the roots of the trees of 1..8 of
# them, and proofs. Proof "leaf" numbers there count from 1; here they are 0-based indices.
RFC6962_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
RFC6962_ROOTS = [
    bytes.fromhex(h)
    for h in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
_H = bytes.fromhex
# (leaf index, tree size, path)
RFC6962_INCLUSION = [
    (0, 8, [
        _H("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
        _H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        _H("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ]),
    (5, 8, [
        _H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        _H("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
        _H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    ]),
    (2, 3, [
        _H("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    ]),
    (1, 5, [
        _H("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
        _H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        _H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
    ]),
]  # fmt: skip
# (old size, new size, path)
RFC6962_CONSISTENCY = [
    (1, 8, [
        _H("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
        _H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        _H("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ]),
    (6, 8, [
        _H("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
        _H("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
        _H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    ]),
    (2, 5, [
        _H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        _H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
    ]),
    (6, 7, [
        _H("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
        _H("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
        _H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    ]),
]  # fmt: skip
# SHA-256 of the empty string (RFC 9162 §2.1.1: MTH({}) = HASH()).
SHA256_EMPTY = _H("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")

MAX_SIZE = 64


def rfc_reader() -> LeafHashReader:
    return LeafHashReader([leaf_hash(leaf) for leaf in RFC6962_LEAVES])


def head(reader: LeafHashReader, size: int) -> TreeHead:
    return TreeHead(size, root_hash([leaf_hash_at(reader, i) for i in range(size)]))


def leaf_hash_at(reader: LeafHashReader, index: int) -> bytes:
    return reader.node_hashes([NodeId(0, index)])[0]


# -- Vectors -------------------------------------------------------------------------------------


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT == SHA256_EMPTY
    assert root_hash([]) == SHA256_EMPTY
    assert CompactRange.empty().root() == SHA256_EMPTY
    with pytest.raises(MerkleError):
        TreeHead(0, RFC6962_ROOTS[0])


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_match_rfc6962_vectors(size: int) -> None:
    leaves = [leaf_hash(leaf) for leaf in RFC6962_LEAVES[:size]]
    assert root_hash(leaves) == RFC6962_ROOTS[size - 1]
    compact, _ = CompactRange.empty().extend(leaves)
    assert compact.root() == RFC6962_ROOTS[size - 1]
    assert tree_head(rfc_reader(), size) == TreeHead(size, RFC6962_ROOTS[size - 1])


def test_leaf_and_node_hash_prefixes() -> None:
    # The tree of one leaf "" has the leaf hash as its root (vector roots[0]).
    assert leaf_hash(b"") == RFC6962_ROOTS[0]
    assert node_hash(leaf_hash(b""), leaf_hash(b"\x00")) == RFC6962_ROOTS[1]
    with pytest.raises(MerkleError):
        node_hash(b"short", RFC6962_ROOTS[0])


@pytest.mark.parametrize(("index", "size", "path"), RFC6962_INCLUSION)
def test_inclusion_proofs_match_vectors(index: int, size: int, path: list[bytes]) -> None:
    proof = inclusion_proof(rfc_reader(), index, size)
    assert proof == InclusionProof(index, size, tuple(path))
    verify_inclusion(
        leaf_hash(RFC6962_LEAVES[index]), proof, TreeHead(size, RFC6962_ROOTS[size - 1])
    )


@pytest.mark.parametrize(("old", "new", "path"), RFC6962_CONSISTENCY)
def test_consistency_proofs_match_vectors(old: int, new: int, path: list[bytes]) -> None:
    proof = consistency_proof(rfc_reader(), old, new)
    assert proof == ConsistencyProof(old, new, tuple(path))
    verify_consistency(
        proof, TreeHead(old, RFC6962_ROOTS[old - 1]), TreeHead(new, RFC6962_ROOTS[new - 1])
    )


# -- Every size, every index, every old size, against independent verifiers ------------------------


@pytest.fixture(scope="module")
def entries() -> list[bytes]:
    return [f"entry {i}".encode() for i in range(MAX_SIZE)]


@pytest.fixture(scope="module")
def reference(entries: list[bytes]) -> InmemoryTree:
    tree = InmemoryTree(algorithm="sha256")
    for entry in entries:
        tree.append_entry(entry)
    return tree


@pytest.fixture(scope="module")
def stored(entries: list[bytes]) -> dict[NodeId, bytes]:
    """A node table filled only from what CompactRange.extend reports, as storage would be."""
    table: dict[NodeId, bytes] = {}
    compact = CompactRange.empty()
    for start in range(0, MAX_SIZE, 5):  # uneven batches, as a sequencer would append
        compact, nodes = compact.extend(leaf_hash(e) for e in entries[start : start + 5])
        for node in nodes:
            assert node.id not in table
            table[node.id] = node.hash
    return table


class TableReader:
    """A NodeReader over a dict, counting calls: the shape of a storage-backed reader."""

    def __init__(self, table: dict[NodeId, bytes]) -> None:
        self.table = table
        self.calls = 0
        self.asked: tuple[NodeId, ...] = ()

    def node_hashes(self, ids: Sequence[NodeId], /) -> list[bytes]:
        self.calls += 1
        self.asked = tuple(ids)
        return [self.table[node] for node in ids]


def test_roots_agree_with_pymerkle_for_every_size(
    entries: list[bytes], reference: InmemoryTree, stored: dict[NodeId, bytes]
) -> None:
    compact = CompactRange.empty()
    for size in range(1, MAX_SIZE + 1):
        compact, _ = compact.append(leaf_hash(entries[size - 1]))
        expected = reference.get_root(size)
        assert compact.root() == expected
        assert root_hash([leaf_hash(e) for e in entries[:size]]) == expected
        assert tree_head(TableReader(stored), size).root == expected
        assert CompactRange.from_reader(TableReader(stored), size) == compact


def test_node_table_holds_each_perfect_subtree_once(stored: dict[NodeId, bytes]) -> None:
    # A tree of n leaves has 2n - popcount(n) perfect subtrees; 64 is a power of two.
    assert len(stored) == 2 * MAX_SIZE - 1
    assert all(node.end <= MAX_SIZE for node in stored)


def test_inclusion_every_index_every_size(
    entries: list[bytes], reference: InmemoryTree, stored: dict[NodeId, bytes]
) -> None:
    memory = LeafHashReader([leaf_hash(e) for e in entries])
    for size in range(1, MAX_SIZE + 1):
        root = reference.get_root(size)
        for index in range(size):
            table = TableReader(stored)
            proof = inclusion_proof(table, index, size)
            assert table.calls == (1 if size > 1 else 0)
            assert table.asked == inclusion_node_ids(index, size)
            assert proof == inclusion_proof(memory, index, size)
            fetched = {node: stored[node] for node in inclusion_node_ids(index, size)}
            assert proof == inclusion_proof(NodeMap(fetched), index, size)
            leaf = leaf_hash(entries[index])
            verify_inclusion(leaf, proof, TreeHead(size, root))
            # pymerkle's own path for the leaf is the leaf hash followed by RFC 9162's PATH.
            ref = reference.prove_inclusion(index + 1, size)
            assert ref.path == [leaf, *proof.path]
            ours = PymerkleInclusionProof(
                "sha256", True, size, index + 1, ref.rule, [leaf, *proof.path]
            )
            pymerkle_verify_inclusion(leaf, root, ours, index=index + 1, size=size)
            ScalesInclusionProof(index, size, list(proof.path)).check(leaf, root)


def test_consistency_every_old_size_every_size(
    reference: InmemoryTree, stored: dict[NodeId, bytes], entries: list[bytes]
) -> None:
    memory = LeafHashReader([leaf_hash(e) for e in entries])
    for new in range(1, MAX_SIZE + 1):
        new_head = TreeHead(new, reference.get_root(new))
        for old in range(0, new + 1):
            old_head = TreeHead(old, reference.get_root(old))
            table = TableReader(stored)
            proof = consistency_proof(table, old, new)
            assert table.asked == consistency_node_ids(old, new)
            assert proof == consistency_proof(memory, old, new)
            fetched = {node: stored[node] for node in consistency_node_ids(old, new)}
            assert proof == consistency_proof(NodeMap(fetched), old, new)
            verify_consistency(proof, old_head, new_head)
            ScalesConsistencyProof(old, new, list(proof.path)).check(old_head.root, new_head.root)


def test_huge_tree_reads_logarithmically() -> None:
    """A tree of 2**40 + 12345 equal leaves: every perfect node of level l has one hash."""
    level_hash = [leaf_hash(b"same")]
    for _ in range(45):
        level_hash.append(node_hash(level_hash[-1], level_hash[-1]))
    asked: list[NodeId] = []

    class Uniform:
        def node_hashes(self, ids: Sequence[NodeId], /) -> list[bytes]:
            asked.extend(ids)
            return [level_hash[node.level] for node in ids]

    size = 2**40 + 12345
    head_ = tree_head(Uniform(), size)
    assert len(asked) == size.bit_count()
    for index in (0, 2**39 + 7, size - 1):
        asked.clear()
        proof = inclusion_proof(Uniform(), index, size)
        assert len(asked) <= 2 * size.bit_length()
        verify_inclusion(level_hash[0], proof, head_)
    asked.clear()
    old = 2**33 + 3
    proof = consistency_proof(Uniform(), old, size)
    assert len(asked) <= 2 * size.bit_length()
    verify_consistency(proof, tree_head(Uniform(), old), head_)


# -- Tampering -----------------------------------------------------------------------------------


def flipped(path: tuple[bytes, ...], at: int) -> tuple[bytes, ...]:
    item = bytearray(path[at])
    item[at % len(item)] ^= 0x10
    return (*path[:at], bytes(item), *path[at + 1 :])


def test_tampered_inclusion_proofs_are_rejected(entries: list[bytes]) -> None:
    memory = LeafHashReader([leaf_hash(e) for e in entries])
    other = leaf_hash(b"not in the log")
    checked = 0
    for size in range(2, 33):
        good = head(memory, size)
        for index in range(size):
            proof = inclusion_proof(memory, index, size)
            leaf = leaf_hash(entries[index])
            neighbours = [i for i in (index - 1, index + 1) if 0 <= i < size]
            bad_proofs = [
                InclusionProof(index, size, proof.path[:-1]),
                InclusionProof(index, size, (*proof.path, good.root)),
                InclusionProof(index, size, (good.root, *proof.path)),
                *(
                    InclusionProof(index, size, flipped(proof.path, i))
                    for i in range(len(proof.path))
                ),
                *(InclusionProof(i, size, proof.path) for i in neighbours),
            ]
            for bad in bad_proofs:
                with pytest.raises(InvalidProof):
                    verify_inclusion(leaf, bad, good)
                checked += 1
            with pytest.raises(InvalidProof):
                verify_inclusion(other, proof, good)
            with pytest.raises(InvalidProof):
                verify_inclusion(leaf, proof, TreeHead(size, leaf_hash(b"other root")))
            with pytest.raises(InvalidProof):
                verify_inclusion(leaf, proof, head(memory, size - 1))
    assert checked > 2000


def test_tampered_consistency_proofs_are_rejected(entries: list[bytes]) -> None:
    memory = LeafHashReader([leaf_hash(e) for e in entries])
    checked = 0
    for new in range(2, 33):
        new_head = head(memory, new)
        for old in range(1, new):
            old_head = head(memory, old)
            proof = consistency_proof(memory, old, new)
            path = proof.path
            bad_proofs = [
                ConsistencyProof(old, new, ()),
                ConsistencyProof(old, new, path[:-1]),
                ConsistencyProof(old, new, (*path, new_head.root)),
                ConsistencyProof(old, new, (old_head.root, *path)),
                *(ConsistencyProof(old, new, flipped(path, i)) for i in range(len(path))),
            ]
            for bad in bad_proofs:
                with pytest.raises(InvalidProof):
                    verify_consistency(bad, old_head, new_head)
                checked += 1
            for wrong_old in (TreeHead(old, leaf_hash(b"x")), head(memory, old - 1)):
                with pytest.raises(InvalidProof):
                    verify_consistency(proof, wrong_old, new_head)
            with pytest.raises(InvalidProof):
                verify_consistency(proof, old_head, TreeHead(new, old_head.root))
            for other_old in (old - 1, old + 1):
                if 0 < other_old < new:
                    with pytest.raises(InvalidProof):
                        verify_consistency(
                            ConsistencyProof(other_old, new, path),
                            head(memory, other_old),
                            new_head,
                        )
    assert checked > 2000


def test_trivial_consistency_cases() -> None:
    reader = rfc_reader()
    four = TreeHead(4, RFC6962_ROOTS[3])
    empty = TreeHead(0, EMPTY_ROOT)
    assert consistency_proof(reader, 0, 4).path == ()
    assert consistency_proof(reader, 4, 4).path == ()
    verify_consistency(ConsistencyProof(0, 4, ()), empty, four)
    verify_consistency(ConsistencyProof(4, 4, ()), four, four)
    with pytest.raises(InvalidProof):
        verify_consistency(ConsistencyProof(4, 4, ()), four, TreeHead(4, RFC6962_ROOTS[2]))
    with pytest.raises(InvalidProof):
        verify_consistency(ConsistencyProof(4, 4, (RFC6962_ROOTS[3],)), four, four)
    with pytest.raises(InvalidProof):
        verify_consistency(ConsistencyProof(0, 4, (RFC6962_ROOTS[3],)), empty, four)
    with pytest.raises(InvalidProof):  # proof for other sizes than the heads
        verify_consistency(ConsistencyProof(3, 4, ()), four, four)


def test_independent_verifiers_reject_a_tampered_proof(
    entries: list[bytes], reference: InmemoryTree
) -> None:
    """The independent verifiers are not vacuous: they catch what ours catches."""
    memory = LeafHashReader([leaf_hash(e) for e in entries])
    proof = inclusion_proof(memory, 5, 13)
    leaf = leaf_hash(entries[5])
    bad = flipped(proof.path, 1)
    with pytest.raises(InclusionProofInvalid):
        ScalesInclusionProof(5, 13, list(bad)).check(leaf, reference.get_root(13))
    rule = reference.prove_inclusion(6, 13).rule
    with pytest.raises(PymerkleInvalidProof):
        pymerkle_verify_inclusion(
            leaf,
            reference.get_root(13),
            PymerkleInclusionProof("sha256", True, 13, 6, rule, [leaf, *bad]),
        )
    cons = consistency_proof(memory, 5, 13)
    with pytest.raises(ConsistencyProofInvalid):
        ScalesConsistencyProof(5, 13, list(flipped(cons.path, 0))).check(
            reference.get_root(5), reference.get_root(13)
        )


# -- Interface and value checks ------------------------------------------------------------------


def test_frontier_ids_follow_the_binary_digits_of_the_size() -> None:
    assert frontier_ids(0) == ()
    assert frontier_ids(13) == (NodeId(3, 0), NodeId(2, 2), NodeId(0, 12))
    assert [node.begin for node in frontier_ids(13)] == [0, 8, 12]


def test_compact_range_batches_equal_single_appends(entries: list[bytes]) -> None:
    leaves = [leaf_hash(e) for e in entries[:21]]
    one_by_one = CompactRange.empty()
    singles = []
    for leaf in leaves:
        one_by_one, nodes = one_by_one.append(leaf)
        singles.extend(nodes)
    batch, batch_nodes = CompactRange.empty().extend(leaves)
    assert batch == one_by_one
    assert list(batch_nodes) == singles
    assert batch.tree_head() == TreeHead(21, root_hash(leaves))
    with pytest.raises(MerkleError):
        CompactRange(3, batch.hashes[:1])


def test_bad_requests_raise_merkle_errors() -> None:
    reader = rfc_reader()
    for call in (
        lambda: inclusion_proof(reader, 8, 8),
        lambda: inclusion_proof(reader, 0, 0),
        lambda: inclusion_proof(reader, -1, 4),
        lambda: consistency_proof(reader, 5, 4),
        lambda: tree_head(reader, 9),  # beyond the leaves held
        lambda: InclusionProof(3, 3, ()),
        lambda: InclusionProof(0, 2, (b"short",)),
        lambda: ConsistencyProof(5, 4, ()),
        lambda: TreeHead(2**63, RFC6962_ROOTS[0]),
        lambda: NodeId(-1, 0),
        lambda: root_hash([b"not 32 bytes"]),
    ):
        with pytest.raises(MerkleError):
            call()
    assert issubclass(MerkleError, CaError)
    assert issubclass(InvalidProof, MerkleError)


def test_node_map_reports_a_missing_node() -> None:
    needed = inclusion_node_ids(3, 8)
    partial = {node: RFC6962_ROOTS[0] for node in needed[1:]}
    with pytest.raises(MerkleError, match="not among the fetched nodes"):
        inclusion_proof(NodeMap(partial), 3, 8)


def test_reader_returning_the_wrong_number_of_hashes_is_refused() -> None:
    class Short:
        def node_hashes(self, ids: Sequence[NodeId], /) -> list[bytes]:
            return [RFC6962_ROOTS[0]] * (len(ids) - 1)

    with pytest.raises(MerkleError, match="returned"):
        inclusion_proof(Short(), 3, 8)


def test_root_from_inclusion_proof_rejects_wrong_lengths() -> None:
    proof = inclusion_proof(rfc_reader(), 2, 3)
    leaf = leaf_hash(RFC6962_LEAVES[2])
    assert root_from_inclusion_proof(leaf, proof) == RFC6962_ROOTS[2]
    with pytest.raises(InvalidProof, match="shorter"):
        root_from_inclusion_proof(leaf, InclusionProof(2, 3, ()))
    with pytest.raises(InvalidProof, match="longer"):
        root_from_inclusion_proof(leaf, InclusionProof(2, 3, (*proof.path, RFC6962_ROOTS[0])))
