"""Runs inside bench/.venvs/edp (envoy-data-plane + betterproto2), never in the project venv.

Reads the resources the parent wrote (length-prefixed serialized bodies per type URL),
parses them with the betterproto classes (untimed), then times, per type:
- serialize: `bytes(message)` for every resource;
- dict: `Message.from_dict(d)` + `bytes(...)` from the message's own `to_dict()` form.
Writes its serialized output next to the input so the parent can check it parses back to
the same protos. Prints one JSON object on stdout. Standard library + envoy_data_plane only.

    bench/.venvs/edp/bin/python bench/_edp_child.py MANIFEST.json
"""

from __future__ import annotations

import importlib
import json
import statistics
import struct
import sys
import time
from pathlib import Path


def read_bodies(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out, offset = [], 0
    while offset < len(data):
        (size,) = struct.unpack_from(">I", data, offset)
        offset += 4
        out.append(data[offset:offset + size])
        offset += size
    return out


def write_bodies(path: Path, bodies: list[bytes]) -> None:
    path.write_bytes(b"".join(struct.pack(">I", len(b)) + b for b in bodies))


def message_class(type_url: str) -> type:
    full = type_url.rsplit("/", 1)[1]
    package, _, name = full.rpartition(".")
    return getattr(importlib.import_module(f"envoy_data_plane.{package}"), name)


def timed(fn, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def main(manifest_path: Path) -> dict:
    manifest = json.loads(manifest_path.read_text())
    repeat = int(manifest["repeat"])
    out: dict = {"package": {}, "types": {}}
    for dist in ("envoy-data-plane", "betterproto2"):
        try:
            from importlib.metadata import version
            out["package"][dist] = version(dist)
        except Exception:  # noqa: BLE001 — a missing dist is reported, not fatal
            out["package"][dist] = None
    for type_url in manifest.get("any_types", []):
        message_class(type_url)  # importing registers it for Any packing/unpacking
    for entry in manifest["types"]:
        cls = message_class(entry["type_url"])
        bodies = read_bodies(Path(entry["file"]))
        messages = [cls.parse(b) for b in bodies]
        serialize = timed(lambda: [bytes(m) for m in messages], repeat)
        write_bodies(Path(entry["file"] + ".edp"), [bytes(m) for m in messages])
        row: dict = {"count": len(bodies), "serialize_s": serialize, "median_serialize_s": statistics.median(serialize),
                     "dict_build_serialize_s": None, "median_dict_build_serialize_s": None, "dict_error": None}
        try:
            # betterproto's own dict form; some fields do not survive it (reported, not hidden)
            dicts = [m.to_dict() for m in messages]
            for d in dicts:
                cls.from_dict(d)
        except Exception as exc:  # noqa: BLE001 — the failure is the finding
            row["dict_error"] = f"{type(exc).__name__}: {exc}"
        else:
            from_dict = timed(lambda: [bytes(cls.from_dict(d)) for d in dicts], repeat)
            row.update(dict_build_serialize_s=from_dict, median_dict_build_serialize_s=statistics.median(from_dict))
        out["types"][entry["type_url"]] = row
    return out


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
