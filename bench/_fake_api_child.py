"""The fake Kubernetes API server (tests/kubernetes/fakeapi.py) in a process of its own,
seeded from a JSON file of objects: `python bench/_fake_api_child.py SEED.json PORT`;
prints its URL once serving. A process of its own so that serving the control plane's
lists, watches and status writes does not share the measured process's GIL."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.kubernetes.fakeapi import FakeKubeApi  # noqa: E402


async def serve(seed: Path, port: int) -> None:
    api = FakeKubeApi()
    for doc in json.loads(seed.read_text()):
        api.seed(doc)
    url = await api.start(port=port)
    print(url, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await api.stop()


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1]), int(sys.argv[2])))
