"""The engine's prefix cache: prompt segments per DP rank, pinned while in use, evicted LRU.

A prompt is a run of segments ((key, tokens), ...) whose keys identify their content and
everything before it (a shared prefix, chained block hashes). A segment lives in the KV pool
once; a running request that uses it pins it; an unpinned one is evicted, least recently used
first over all ranks (the engine counts one pool for them all), when the pool needs room. A
segment a prefill has passed in part is cached in part, and grows as that prefill, or a later
one whose hit ends inside it (a shorter prompt cached a cut-short copy), goes on: a prompt
admitted meanwhile reuses what is computed so far, as
vLLM's and SGLang's caches hold each block or chunk once it is computed, whatever the grain the
prompt's segments were described in. A radix cache (SGLang) hits any matching prefix, a
block-hash cache (vLLM) whole blocks only; the last prompt token is always computed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from raybench.sim.features import PrefixCache


class PrefixStore:
    """Cached segments of every DP rank; ``tokens`` of them count against the KV pool."""

    def __init__(self, mode: PrefixCache, block_tokens: int, ranks: int) -> None:
        self.mode = mode
        self.block_tokens = block_tokens
        self.ranks = ranks
        self._entries: OrderedDict = OrderedDict()  # (rank, key) -> [tokens, pins], least recently used first
        self.tokens = 0
        self._unpinned = 0  # tokens of entries no request pins: what evict() may free

    @property
    def enabled(self) -> bool:
        return self.mode is not PrefixCache.NONE

    def lookup(self, rank: int, segments: Sequence, prompt_tokens: int) -> int:
        """Prompt tokens the rank's cache holds for these segments."""
        if not self.enabled or not segments:
            return 0
        hit = 0
        for key, tokens in segments:
            entry = self._entries.get((rank, key))
            if entry is None:
                break
            hit += min(entry[0], tokens)
            if entry[0] < tokens:  # computed in part so far: the hit ends inside it
                break
        hit = min(hit, prompt_tokens - 1)
        if self.mode is PrefixCache.BLOCK_HASH:
            hit -= hit % self.block_tokens
        return hit

    def pin_hits(self, rank: int, segments: Sequence, hit: int) -> list:
        """Pin the leading segments ``hit`` reads from, the last one perhaps in part (a block-hash
        hit ends at a block boundary inside a segment); returns their keys."""
        keys, covered = [], 0
        for key, tokens in segments:
            entry = self._entries.get((rank, key))
            if covered >= hit or entry is None:
                break
            if not entry[1]:
                self._unpinned -= entry[0]
            entry[1] += 1
            self._entries.move_to_end((rank, key))
            keys.append(key)
            covered += tokens
        return keys

    def insert(self, rank: int, key: object, tokens: int) -> bool:
        """Cache a segment a prefill has computed (all of it, or its first ``tokens`` so far),
        pinned by its request; False if there already."""
        if (rank, key) in self._entries:  # computed twice (both requests missed it): keep the first copy
            return False
        self._entries[rank, key] = [tokens, 1]
        self.tokens += tokens
        return True

    def cached(self, rank: int, key: object) -> int:
        """Tokens of the segment the rank's cache holds (0: none)."""
        entry = self._entries.get((rank, key))
        return 0 if entry is None else entry[0]

    def extend(self, rank: int, key: object, tokens: int) -> None:
        """A segment cached in part: its prefill has computed ``tokens`` more of it."""
        entry = self._entries[rank, key]
        entry[0] += tokens
        self.tokens += tokens
        if not entry[1]:
            self._unpinned += tokens

    def unpin(self, rank: int, keys: Sequence) -> None:
        for key in keys:
            entry = self._entries.get((rank, key))
            if entry is not None:
                entry[1] -= 1
                if not entry[1]:
                    self._unpinned += entry[0]

    def evictable(self) -> int:
        """Tokens of cached segments no running request reads: what eviction could free."""
        return self._unpinned

    def evict(self, need: int) -> int:
        """Evict unpinned segments, least recently used first, until ``need`` tokens are freed."""
        freed = 0
        for rank_key in [rank_key for rank_key, e in self._entries.items() if e[1] == 0]:
            freed += self._entries.pop(rank_key)[0]
            if freed >= need:
                break
        self.tokens -= freed
        self._unpinned -= freed
        return freed
