"""A group's written weights → the integers its destinations get (SPEC 3.3).

All entries without a weight: equal shares (1 each). Some without: the weighted ones
keep theirs and the others share what is left of 100 equally (the remainder to the
earliest), nothing if the others already use 100. One rule for what the engine serves
(`resolve/groups.py`) and for what `modelroute status --kubernetes` shows from the specs
in a cluster (`modelroute/cluster_status.py`), which has no compile to read.
"""

from __future__ import annotations

from collections.abc import Sequence


def shares(written: Sequence[int | None]) -> list[int]:
    if None not in written:
        return [w for w in written if w is not None]  # every weight written: as written
    if all(w is None for w in written):
        return [1] * len(written)
    missing = [n for n, w in enumerate(written) if w is None]
    left = max(0, 100 - sum(w for w in written if w is not None))
    out = [w if w is not None else 0 for w in written]
    for rank, n in enumerate(missing):
        out[n] = left // len(missing) + (1 if rank < left % len(missing) else 0)
    return out
