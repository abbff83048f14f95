"""The `modelroute` CLI and the wiring of engine, xDS server and controller.

The control plane forks child processes (Envoy, model replicas) while gRPC threads run.
gRPC's fork handlers are not needed for fork+exec and can abort the child (SIGABRT), so
they are switched off here, before anything of ours imports gRPC.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
