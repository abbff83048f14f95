"""The mock engine's queueing model: continuous batching with a KV cache and a prefix cache.

Good enough to benchmark load balancing (issue #18), not a model of any GPU. It keeps
the shapes that decide where a request should go:

- **Per-replica concurrency:** at most `max_running` sequences decode together (vLLM's
  `max_num_seqs`); the rest wait in FIFO order. A sequence is admitted only while the KV
  cache has room for its prompt and its completion (`kv_tokens`; 0 = unlimited), so a
  few long prompts fill a replica before its slots do.
- **Steps:** one step produces one token for every running sequence. A step takes
  `decode_ms`, growing by `batch_slowdown` per extra running sequence and by
  `kv_slowdown` × KV use (memory-bound decoding slows as the cache fills), plus the
  prefill of the sequences admitted in it (`prefill_ms_per_token` × uncached prompt
  tokens), which every running sequence waits out. `speed` divides every duration (0.5:
  a GPU half as fast).
- **Prompt length:** a prompt costs prefill time and KV room in proportion to its
  tokens (words, as the mock counts them).
- **Prefix cache:** prompts are cut into blocks of `BLOCK_TOKENS`; each block is keyed by
  a hash of everything up to its end (vLLM's scheme), so a hit means the whole prefix
  matched. Leading blocks found in the cache are not prefilled. The cache holds
  `prefix_cache_tokens` tokens of blocks, least recently used out first; hits and
  queries (in tokens) are counted for `/metrics`, and so is the time per output token
  (each step's duration for every token after a sequence's first).

With `decode_ms` and `prefill_ms_per_token` both 0 the model is off and the engine
answers at once, as it always did (`MockEngine` then bypasses the scheduler).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

BLOCK_TOKENS = 16  # vLLM's default block size
RATE_WINDOW_S = 2.0  # completions counted for the reported request rate (MockEngine)


@dataclass(frozen=True, slots=True)
class Timing:
    """How long the simulated work takes; see the module docstring."""

    decode_ms: float = 0.0
    prefill_ms_per_token: float = 0.0
    batch_slowdown: float = 0.0
    kv_slowdown: float = 0.0
    kv_tokens: int = 0
    speed: float = 1.0
    prefix_cache_tokens: int = 0
    max_running: int = 64

    @property
    def active(self) -> bool:
        return self.decode_ms > 0 or self.prefill_ms_per_token > 0


class PrefixCache:
    """Block hashes of recently seen prompts, least recently used evicted first."""

    def __init__(self) -> None:
        self._blocks: OrderedDict[int, None] = OrderedDict()
        self.queries = 0  # prompt tokens looked up
        self.hits = 0  # of which found

    @staticmethod
    def block_hashes(tokens: list[str]) -> list[int]:
        """One hash per full block, each covering the whole prompt up to the block's end."""
        hashes: list[int] = []
        running = 0
        for start in range(0, len(tokens) - BLOCK_TOKENS + 1, BLOCK_TOKENS):
            running = hash((running, tuple(tokens[start:start + BLOCK_TOKENS])))
            hashes.append(running)
        return hashes

    def lookup_and_insert(self, tokens: list[str], capacity_tokens: int) -> int:
        """Tokens of `tokens` already cached (leading full blocks); then caches them all."""
        hashes = self.block_hashes(tokens)
        cached = 0
        for h in hashes:
            if h not in self._blocks:
                break
            cached += 1
        self.queries += len(tokens)
        self.hits += cached * BLOCK_TOKENS
        capacity = capacity_tokens // BLOCK_TOKENS
        if capacity <= 0:
            self._blocks.clear()
            return cached * BLOCK_TOKENS
        for h in hashes:
            self._blocks[h] = None
            self._blocks.move_to_end(h)
        while len(self._blocks) > capacity:
            self._blocks.popitem(last=False)
        return cached * BLOCK_TOKENS


@dataclass(eq=False)
class Sequence:
    """One request inside the scheduler. `tokens` receives one item per generated token
    (the prefill's end comes with the first)."""

    prompt: list[str]
    max_new: int
    cached: int = 0
    emitted: int = 0
    tokens: asyncio.Queue[int] = field(default_factory=asyncio.Queue)

    @property
    def kv_need(self) -> int:
        return len(self.prompt) + self.max_new


class Scheduler:
    """Continuous batching for one replica. `generate` is what a request awaits."""

    def __init__(self, timing: Callable[[], Timing], clock: Callable[[], float] = time.monotonic) -> None:
        self._timing = timing
        self._clock = clock
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.kv_used = 0
        self.prefix_cache = PrefixCache()
        self.tpot_sum = 0.0  # seconds per generated token, summed over tokens (vLLM's histogram sum)
        self.tpot_count = 0
        self._loop: asyncio.Task[None] | None = None  # runs while there is work, ends when idle

    # --- what the engine reports -------------------------------------------------------

    @property
    def max_running(self) -> int:
        return max(1, self._timing().max_running)

    def kv_use(self) -> float:
        """KV-cache use in [0, 1]: reserved tokens over capacity (running share without
        a capacity)."""
        capacity = self._timing().kv_tokens
        if capacity > 0:
            return min(1.0, self.kv_used / capacity)
        return min(1.0, len(self.running) / self.max_running)

    def load(self) -> float:
        """Utilization for load reports: the busier of slots and KV, plus the queue in
        units of a full batch (above 1 once requests wait)."""
        return max(len(self.running) / self.max_running, self.kv_use()) + len(self.waiting) / self.max_running

    # --- work --------------------------------------------------------------------------

    async def generate(self, prompt: list[str], max_new: int) -> AsyncIterator[int]:
        """Waits for admission and prefill, then yields once per generated token. A
        consumer that stops (client gone) frees its slot and KV room."""
        seq = Sequence(prompt, max_new)
        self.waiting.append(seq)
        self._ensure_loop()
        try:
            while True:
                item = await seq.tokens.get()
                if item < 0:
                    return  # prefilled, no token to give (max_new == 0)
                yield item
                if item >= max_new:
                    return
        finally:
            self._drop(seq)

    def _ensure_loop(self) -> None:
        if self._loop is None or self._loop.done():
            self._loop = asyncio.get_running_loop().create_task(self._run(), name="mock batching")

    def _drop(self, seq: Sequence) -> None:
        if seq in self.running:
            self.running.remove(seq)
            self.kv_used -= seq.kv_need
        elif seq in self.waiting:
            self.waiting.remove(seq)

    def _admit(self, timing: Timing) -> list[Sequence]:
        admitted: list[Sequence] = []
        while self.waiting and len(self.running) < self.max_running:
            seq = self.waiting[0]
            fits = timing.kv_tokens <= 0 or self.kv_used + seq.kv_need <= timing.kv_tokens
            if not fits and self.running:
                break  # FIFO: a long prompt waits for room rather than being overtaken
            self.waiting.popleft()
            cache = timing.prefix_cache_tokens if timing.prefix_cache_tokens > 0 else timing.kv_tokens
            seq.cached = self.prefix_cache.lookup_and_insert(seq.prompt, cache)
            self.kv_used += seq.kv_need
            self.running.append(seq)
            admitted.append(seq)
        return admitted

    def step_ms(self, timing: Timing, admitted: list[Sequence]) -> float:
        """Duration of the next step: decode for the batch plus the prefill of `admitted`."""
        extra = max(0, len(self.running) - 1)
        decode = timing.decode_ms * (1 + timing.batch_slowdown * extra) * (1 + timing.kv_slowdown * self.kv_use())
        prefill = timing.prefill_ms_per_token * sum(max(0, len(s.prompt) - s.cached) for s in admitted)
        return (decode + prefill) / max(timing.speed, 1e-3)

    async def _run(self) -> None:
        while self.waiting or self.running:
            timing = self._timing()
            admitted = self._admit(timing)
            started = self._clock()
            await asyncio.sleep(self.step_ms(timing, admitted) / 1000)
            step_s = self._clock() - started
            for seq in list(self.running):
                if seq.emitted < seq.max_new:
                    seq.emitted += 1
                    seq.tokens.put_nowait(seq.emitted)
                    if seq.emitted > 1:  # the first token's time is the time to first token
                        self.tpot_sum += step_s
                        self.tpot_count += 1
                if seq.emitted >= seq.max_new:
                    if seq.max_new == 0:
                        seq.tokens.put_nowait(-1)
                    self.running.remove(seq)
                    self.kv_used -= seq.kv_need
