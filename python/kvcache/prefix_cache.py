"""PrefixCache: keys and values of prompt blocks kept across calls, so that a later prompt starting with the same
tokens skips computing them (vLLM's automatic prefix caching, SGLang's RadixAttention).

A prompt is cut into blocks of block_size tokens. Block i is keyed by a hash chain: the digest of block i-1's key
and block i's tokens, so a key names the whole prefix up to the block's end, and two prompts share a block only if
they agree on every token before it. Each entry keeps its tokens and its parent key too, and a lookup compares
them, so even a digest collision cannot hand out another prefix's keys and values. Entries are evicted least
recently used once the bytes held pass max_bytes; a use touches a chain's blocks from its end back to its start,
so a prefix's later blocks are evicted before the earlier ones they need.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np

from ._core import KVCache

_ROOT = b"kvcache.prefix"


def _root(dtype: str) -> bytes:
    return hashlib.blake2b(_ROOT + dtype.encode(), digest_size=16).digest()


@dataclass
class _Block:
    parent: bytes
    tokens: tuple
    positions: np.ndarray  # (layers, 2, n_kv_head, block_size, head_dim) in the cache's element type


class PrefixCache:
    """Blocks of prompt keys and values of one model, for caches of one dtype each (a key includes the dtype)."""

    def __init__(self, max_bytes: int, block_size: int = 32):
        self.max_bytes = max_bytes
        self.block_size = block_size
        self._blocks: "OrderedDict[bytes, _Block]" = OrderedDict()
        self._bytes = 0
        self._stats: Dict[str, int] = {"lookups": 0, "hits": 0, "tokens_reused": 0, "tokens_looked_up": 0,
                                       "blocks_stored": 0, "evictions": 0}

    @property
    def stats(self) -> Dict[str, int]:
        """lookups (prompts looked up), hits (prompts that reused at least one block), tokens_reused,
        tokens_looked_up, blocks (held now), bytes (held now), blocks_stored and evictions (since creation)."""
        return dict(self._stats, blocks=len(self._blocks), bytes=self._bytes)

    @property
    def nbytes(self) -> int:
        """Bytes of keys and values held now."""
        return self._bytes

    def clear(self) -> None:
        """Drop every block (the counters of stats stay)."""
        self._blocks.clear()
        self._bytes = 0

    def _touch(self, chain: List[bytes]) -> None:
        for key in reversed(chain):  # the chain's first block ends most recently used: evicted last
            self._blocks.move_to_end(key)

    def _keys(self, ids: Sequence[int], dtype: str, n_blocks: int) -> List[bytes]:
        keys, key = [], _root(dtype)
        bs = self.block_size
        for i in range(n_blocks):
            block = np.asarray(ids[i * bs:(i + 1) * bs], dtype=np.int64).tobytes()
            key = hashlib.blake2b(key + block, digest_size=16).digest()
            keys.append(key)
        return keys

    def lookup(self, ids: Sequence[int], dtype: str) -> List[np.ndarray]:
        """The stored blocks that begin ids, in order: at most (len(ids) - 1) // block_size of them, since the last
        token must be computed for its logits.

        Returns:
            Per block, its keys and values as an array (n_layer, 2, n_kv_head, block_size, head_dim) of the dtype."""
        n = (len(ids) - 1) // self.block_size
        found: List[np.ndarray] = []
        used: List[bytes] = []
        parent = _root(dtype)
        bs = self.block_size
        for i, key in enumerate(self._keys(ids, dtype, n)):
            block = self._blocks.get(key)
            if block is None or block.parent != parent or block.tokens != tuple(ids[i * bs:(i + 1) * bs]):
                break
            found.append(block.positions)
            used.append(key)
            parent = key
        self._touch(used)
        self._stats["lookups"] += 1
        self._stats["tokens_looked_up"] += len(ids)
        if found:
            self._stats["hits"] += 1
            self._stats["tokens_reused"] += len(found) * bs
        return found

    def store(self, ids: Sequence[int], cache: KVCache, row: int) -> None:
        """Keep the blocks of ids (the tokens at the start of a cache row, which holds their keys and values) that
        are not held yet; then evict the least recently used past max_bytes.

        Args:
            ids: the row's tokens from its start; only whole blocks of block_size are stored.
            cache: the cache holding their keys and values. row: its row."""
        bs = self.block_size
        n = min(len(ids), cache.get_seq_length(row)) // bs
        keys = self._keys(ids, cache.dtype, n)
        parent = _root(cache.dtype)
        for i, key in enumerate(keys):
            if key not in self._blocks:
                positions = cache.read(row, i * bs, bs)
                if positions.nbytes > self.max_bytes:
                    return
                self._blocks[key] = _Block(parent, tuple(ids[i * bs:(i + 1) * bs]), positions)
                self._bytes += positions.nbytes
                self._stats["blocks_stored"] += 1
            parent = key
        self._touch(keys)
        while self._bytes > self.max_bytes:
            _, evicted = self._blocks.popitem(last=False)
            self._bytes -= evicted.positions.nbytes
            self._stats["evictions"] += 1
