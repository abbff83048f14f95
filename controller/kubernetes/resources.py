"""Where each kind lives in the Kubernetes API (group, version, plural).

The client builds URLs from these descriptors, the provider picks what to watch, and the
fake API server in the tests serves exactly these types (and their discovery documents),
so there is one list of the resource types this controller knows.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    # With a status subresource, writes to the main resource ignore `status` and writes
    # to `/status` touch only `status` (and `metadata.generation` counts spec changes).
    status_subresource: bool = False
    scale_subresource: bool = False
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        """The REST path: /api/v1/... for the core group, /apis/<g>/<v>/... otherwise."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
            if subresource is not None:
                base += f"/{subresource}"
        return base

    def __str__(self) -> str:
        return f"{self.plural}.{self.group or 'core'}/{self.version}"


MODEL_SERVER = ResourceType("networking.matrixinfer.ai", "v1alpha1", "modelservers", "ModelServer",
                            status_subresource=True, short_names=("ms",))
MODEL_ROUTE = ResourceType("networking.matrixinfer.ai", "v1alpha1", "modelroutes", "ModelRoute",
                           status_subresource=True, short_names=("mr",))
MODEL_INFER = ResourceType("workload.matrixinfer.ai", "v1alpha1", "modelinfers", "ModelInfer",
                           status_subresource=True, scale_subresource=True, short_names=("mi",))
MODEL = ResourceType("registry.matrixinfer.ai", "v1alpha1", "models", "Model", status_subresource=True)
AUTOSCALING_POLICY = ResourceType("registry.matrixinfer.ai", "v1alpha1", "autoscalingpolicies",
                                  "AutoscalingPolicy", status_subresource=True)
SECRET = ResourceType("", "v1", "secrets", "Secret")
SERVICE = ResourceType("", "v1", "services", "Service", status_subresource=True, short_names=("svc",))
DEPLOYMENT = ResourceType("apps", "v1", "deployments", "Deployment", status_subresource=True,
                          scale_subresource=True, short_names=("deploy",))
HPA = ResourceType("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler",
                   status_subresource=True, short_names=("hpa",))
ENDPOINT_SLICE = ResourceType("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
LEASE = ResourceType("coordination.k8s.io", "v1", "leases", "Lease")
POD = ResourceType("", "v1", "pods", "Pod", status_subresource=True, short_names=("po",))
NAMESPACE = ResourceType("", "v1", "namespaces", "Namespace", namespaced=False, short_names=("ns",))
EVENT = ResourceType("", "v1", "events", "Event", short_names=("ev",))
VALIDATING_WEBHOOK = ResourceType("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations",
                                  "ValidatingWebhookConfiguration", namespaced=False)
MUTATING_WEBHOOK = ResourceType("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations",
                                "MutatingWebhookConfiguration", namespaced=False)

# The MatrixInfer kinds (and Secret) the provider feeds to the engine, by kind name.
ENGINE_KINDS: dict[str, ResourceType] = {
    r.kind: r for r in (MODEL_SERVER, MODEL_ROUTE, MODEL_INFER, MODEL, AUTOSCALING_POLICY, SECRET)
}
ALL: tuple[ResourceType, ...] = (*ENGINE_KINDS.values(), SERVICE, DEPLOYMENT, HPA, ENDPOINT_SLICE, LEASE, POD,
                                 NAMESPACE, EVENT, VALIDATING_WEBHOOK, MUTATING_WEBHOOK)
