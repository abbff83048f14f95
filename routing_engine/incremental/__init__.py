"""The engine's memory across compiles: the same results as the one-shot `resolve` and
`translate`, computed from what changed.

`routing_engine.translate` and `routing_engine.resolve` define what a compile produces,
in plain passes. This package holds the machinery that makes a one-route edit at
10,000 routes cost that route: memo tables recognising unchanged input by identity
(`resolver.py`, `translator.py`), and the output patched part by part
(`assembly.py`). Tests compare incremental and one-shot results after random edit
sequences (tests/resolve/test_incremental.py, tests/translate/test_properties.py).
"""

from routing_engine.incremental.resolver import Resolver
from routing_engine.incremental.translator import CacheStats, Translator

__all__ = ["CacheStats", "Resolver", "Translator"]
