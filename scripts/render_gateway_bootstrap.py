"""Write deploy/base/gateway-bootstrap.yaml from modelroute/gateway_bootstrap.py.

Run after changing the bootstrap templates or renderers:
    .venv/bin/python scripts/render_gateway_bootstrap.py
"""

from __future__ import annotations

from pathlib import Path

from modelroute.gateway_bootstrap import manifest

OUT = Path(__file__).resolve().parents[1] / "deploy" / "base" / "gateway-bootstrap.yaml"

if __name__ == "__main__":
    OUT.write_text(manifest())
    print(f"wrote {OUT}")
