"""Serialization: the same compiled world serialized with our protos (xds-protos, upb) vs
with `envoy-data-plane` (betterproto2), the pure-Python alternative (issue #9).

The world is bench/worlds.py's N ModelRoutes + N ModelServers, compiled by
routing_engine (resolve + translate); its xDS resources are what both sides serialize.
- ours: every resource parsed into its upb message (untimed), then
  `SerializeToString(deterministic=True)` (what translate does) is timed; and
  `ParseDict` from the proto3-JSON dict + serialize ("build from dict").
- envoy-data-plane: in bench/.venvs/edp (created on first run: `python -m venv` +
  `pip install envoy-data-plane`), a child process parses the same bytes with the
  betterproto classes (untimed), times `bytes(message)`, and `from_dict(to_dict())` +
  `bytes()`. Its output is parsed back here with upb and must equal the original protos.

    .venv/bin/python -m bench.serialization [--routes 10000] [--repeat 5] [--quick]
Writes bench/results/serialization.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from bench import worlds
from bench._common import BENCH, machine, spread, venv_python, write_result
from routing_engine import serialize
from routing_engine.engine import compile as compile_world
from routing_engine.world import Target

EDP_PACKAGES = ["envoy-data-plane"]


def _write_bodies(path: Path, bodies: list[bytes]) -> None:
    path.write_bytes(b"".join(struct.pack(">I", len(b)) + b for b in bodies))


def _read_bodies(path: Path) -> list[bytes]:
    data, out, offset = path.read_bytes(), [], 0
    while offset < len(data):
        (size,) = struct.unpack_from(">I", data, offset)
        out.append(data[offset + 4:offset + 4 + size])
        offset += 4 + size
    return out


def _any_type_urls(value: Any) -> set[str]:
    """Every `@type` packed in Any fields: betterproto must import (register) those."""
    if isinstance(value, dict):
        found = {value["@type"]} if isinstance(value.get("@type"), str) else set()
        return found.union(*(_any_type_urls(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_any_type_urls(v) for v in value))
    return set()


def _timed(fn: Any, repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def measure(routes: int, repeat: int, edp_repeat: int, *, alternative: bool = True) -> dict[str, Any]:
    """`alternative=False` times our side only (no envoy-data-plane venv needed)."""
    started = time.perf_counter()
    compiled = compile_world(worlds.world(routes), Target())
    compile_s = time.perf_counter() - started
    by_type = {t: list(m.values()) for t, m in sorted(compiled.resources.items()) if m}
    ours: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ser-") as tmp:
        manifest: dict[str, Any] = {"repeat": edp_repeat, "types": [], "any_types": []}
        any_types: set[str] = set()
        for type_url, resources in by_type.items():
            cls = serialize.MESSAGE_TYPES[type_url]
            messages = [serialize.parse(r) for r in resources]
            ser = _timed(lambda: [m.SerializeToString(deterministic=True) for m in messages], repeat)
            dicts = [json_format.MessageToDict(m) for m in messages]
            any_types.update(_any_type_urls(dicts))
            from_dict = _timed(lambda: [json_format.ParseDict(d, cls()).SerializeToString(deterministic=True)
                                        for d in dicts], repeat)
            ours[type_url] = {"count": len(resources), "bytes": sum(len(r.body) for r in resources),
                              "serialize_s": ser, "dict_build_serialize_s": from_dict}
            file = Path(tmp) / f"{type_url.rsplit('.', 1)[1]}.bin"
            _write_bodies(file, [r.body for r in resources])
            manifest["types"].append({"type_url": type_url, "file": str(file)})
        manifest["any_types"] = sorted(any_types)
        edp = _run_edp(manifest, Path(tmp), by_type) if alternative else None
    rows = []
    for type_url, mine in ours.items():
        theirs = edp["types"][type_url] if edp else None
        ours_ser, ours_dict = statistics.median(mine["serialize_s"]), statistics.median(mine["dict_build_serialize_s"])
        edp_ser = theirs["median_serialize_s"] if theirs else None
        edp_dict = theirs["median_dict_build_serialize_s"] if theirs else None
        rows.append({"type": type_url.rsplit(".", 1)[1], "count": mine["count"], "bytes": mine["bytes"],
                     "upb_serialize_s": spread(mine["serialize_s"]),
                     "edp_serialize_s": spread(theirs["serialize_s"]) if theirs else None,
                     "upb_dict_build_serialize_s": spread(mine["dict_build_serialize_s"]),
                     "edp_dict_build_serialize_s": spread(theirs["dict_build_serialize_s"]) if edp_dict else None,
                     "edp_dict_error": theirs["dict_error"] if theirs else None,
                     "ratio_serialize": edp_ser / ours_ser if edp_ser else None,
                     "ratio_dict_build_serialize": edp_dict / ours_dict if edp_dict else None})

    def total(key: str, only_dict_ok: bool = False) -> float | None:
        values = [r[key] for r in rows if not only_dict_ok or r["edp_dict_build_serialize_s"]]
        return sum(v["median"] for v in values) if values and all(values) else None

    totals: dict[str, Any] = {
        "upb_serialize_s": total("upb_serialize_s"), "edp_serialize_s": total("edp_serialize_s"),
        # dict totals only over the types betterproto could build from its own dicts
        "upb_dict_build_serialize_s": total("upb_dict_build_serialize_s", bool(edp)),
        "edp_dict_build_serialize_s": total("edp_dict_build_serialize_s", True) if edp else None,
        "dict_failed_types": [r["type"] for r in rows if r["edp_dict_error"]]}
    totals["ratio_serialize"] = (totals["edp_serialize_s"] / totals["upb_serialize_s"]
                                 if totals["edp_serialize_s"] else None)
    totals["ratio_dict_build_serialize"] = (totals["edp_dict_build_serialize_s"] / totals["upb_dict_build_serialize_s"]
                                            if totals["edp_dict_build_serialize_s"] else None)
    totals["route_configuration_ratio_serialize"] = next(
        r["ratio_serialize"] for r in rows if r["type"] == "RouteConfiguration")
    envoy_routes = sum(len(listener.routes) for listener in compiled.gateway.listeners) if compiled.gateway else 0
    return {"model_routes": routes, "envoy_routes": envoy_routes, "full_compile_s": compile_s,
            "repeat": repeat, "edp_repeat": edp_repeat, "edp_packages": edp["package"] if edp else None,
            "by_type": rows, "total": totals, "round_trip_equal": True if edp else None}


def _run_edp(manifest: dict[str, Any], tmp: Path, by_type: dict[str, list[Any]]) -> dict[str, Any]:
    """The envoy-data-plane side in its own venv; checks its output equals ours."""
    manifest_path = tmp / "manifest.json"
    manifest_path.write_text(json.dumps(manifest))
    python = venv_python("edp", EDP_PACKAGES)
    child = subprocess.run([str(python), str(BENCH / "_edp_child.py"), str(manifest_path)], capture_output=True,
                           text=True, timeout=3600, cwd=tmp)
    if child.returncode != 0:
        raise RuntimeError(f"envoy-data-plane child failed:\n{child.stderr[-3000:]}")
    edp: dict[str, Any] = json.loads(child.stdout)
    # Same content: what betterproto wrote parses back (upb) to the very same messages.
    for entry in manifest["types"]:
        cls = serialize.MESSAGE_TYPES[entry["type_url"]]
        theirs = [cls.FromString(b) for b in _read_bodies(Path(entry["file"] + ".edp"))]
        mine = [serialize.parse(r) for r in by_type[entry["type_url"]]]
        if theirs != mine:
            raise AssertionError(f"envoy-data-plane round trip changed {entry['type_url']}")
    return edp


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=None, help="ModelRoutes (+ as many ModelServers)")
    parser.add_argument("--repeat", type=int, default=None, help="timed repeats for upb")
    parser.add_argument("--edp-repeat", type=int, default=None, help="timed repeats for envoy-data-plane")
    parser.add_argument("--quick", action="store_true", help="1,000 routes, 2 repeats")
    parser.add_argument("--no-alternative", action="store_true",
                        help="time our side only (no envoy-data-plane venv): for the smoke test")
    args = parser.parse_args(argv)
    routes = args.routes or (1000 if args.quick else 10_000)
    repeat = args.repeat or (2 if args.quick else 5)
    edp_repeat = args.edp_repeat or (1 if args.quick else 2)  # ~4 min per repeat at 10,000 routes
    result = measure(routes, repeat, edp_repeat, alternative=not args.no_alternative)
    print(f"serialization, {result['model_routes']:,} ModelRoutes ({result['envoy_routes']:,} Envoy routes):")
    print(f"{'resource':<24} {'count':>6} {'KB':>7} {'upb ms':>9} {'betterproto ms':>15} {'ratio':>7}"
          f" {'upb dict ms':>12} {'bp dict ms':>11} {'ratio':>7}")
    def ms(value: dict[str, float] | None) -> str:
        return f"{value['median'] * 1e3:.1f}" if value else ("-" if args.no_alternative else "failed")

    def ratio(value: float | None) -> str:
        return f"{value:.0f}x" if value else "-"

    for r in result["by_type"]:
        print(f"{r['type']:<24} {r['count']:>6} {r['bytes'] / 1024:>7.0f} {ms(r['upb_serialize_s']):>9}"
              f" {ms(r['edp_serialize_s']):>15} {ratio(r['ratio_serialize']):>7}"
              f" {ms(r['upb_dict_build_serialize_s']):>12} {ms(r['edp_dict_build_serialize_s']):>11}"
              f" {ratio(r['ratio_dict_build_serialize']):>7}")
    t = result["total"]

    def total_ms(value: float | None) -> str:
        return f"{value * 1e3:.1f}" if value is not None else "-"

    print(f"{'all':<24} {'':>6} {'':>7} {total_ms(t['upb_serialize_s']):>9} {total_ms(t['edp_serialize_s']):>15}"
          f" {ratio(t['ratio_serialize']):>7} {total_ms(t['upb_dict_build_serialize_s']):>12}"
          f" {total_ms(t['edp_dict_build_serialize_s']):>11} {ratio(t['ratio_dict_build_serialize']):>7}")
    for r in result["by_type"]:
        if r["edp_dict_error"]:
            print(f"  betterproto from_dict(to_dict()) failed for {r['type']}: {r['edp_dict_error']}")
    out = {"benchmark": "serialization", "quick": args.quick, "machine": machine(),
           "command": "python -m bench.serialization" + (" --quick" if args.quick else ""),
           "alternative": not args.no_alternative, **result}
    path = write_result("serialization", out)
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
