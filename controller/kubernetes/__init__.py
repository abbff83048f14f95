"""The Kubernetes half of the controller.

`client` is the only module that talks to the API server (HTTP via aiohttp, credentials
from kubeconfig); every other module works on plain dicts and pydantic models so it can
be unit-tested against the fake API in `tests/kubernetes/fakeapi.py`:

    client ──► informer (list+watch, cache) ──► provider (World objects + endpoints)
                                                  └─ secrets (only the referenced ones)
    workloads (pure: ModelInfer → Deployment/Service/HPA) ──► reconciler ──► client
    status_writer (status subresource, conflict-safe) ──► client
                 └─ events (Kubernetes Events for what changed)
    webhook_server (HTTPS admission, `admission` handlers) ◄── webhook_certs (CA and
        serving certificate in a Secret, caBundle) ◄── pki (the certificates)
"""
