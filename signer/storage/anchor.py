"""SQL of the checkpoint anchor check (signer.translog.anchor): the log's sizes and the
tree's root at an earlier size, read from the stored nodes."""

from __future__ import annotations

from dataclasses import dataclass

from ca.merkle import CompactRange, frontier_ids
from signer.storage.log import fetch_nodes
from signer.storage.records import PoolStore, guard


@dataclass(frozen=True)
class LogSizes:
    sequenced: int  # entries appended (log_state.size)
    integrated: int  # entries in the Merkle tree (log_tree.integrated)


class AnchorStore(PoolStore):
    async def sizes(self) -> LogSizes:
        async with guard("read log sizes"):
            row = await self._pool.fetchrow(
                "SELECT (SELECT size FROM log_state WHERE id = 1) AS sequenced,"
                " (SELECT integrated FROM log_tree WHERE id = 1) AS integrated"
            )
        assert row is not None
        return LogSizes(int(row["sequenced"]), int(row["integrated"]))

    async def root_at(self, size: int) -> bytes:
        """``MTH(D[size])`` (RFC 9162 §2.1.1) of the stored tree, ``size`` <= integrated: the
        fold of the perfect subtrees that make up the first ``size`` leaves."""
        async with guard("read log nodes"):
            nodes = await fetch_nodes(self._pool, frontier_ids(size))
        return CompactRange.from_reader(nodes, size).root()
