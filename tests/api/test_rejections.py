"""Hand-broken copies of the seed examples: each breaks one admission rule and must fail
with the field path and the rule in the message, and, where a CRD schema can say the rule
(types, ranges, patterns, required, unknown fields), the API server's schema must reject it
too. Rules a schema cannot say (cross-field checks, whose CEL rules only an API server
evaluates, and envelope checks the API server does itself) are marked crd=False.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from routing_engine.api.loader import load_text
from tests.api.crd_schema import validator
from tests.support import REPO

DELETE = object()


def _seed(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((REPO / "examples" / "seeds" / name).read_text())
    return doc


@dataclass(frozen=True)
class Case:
    id: str
    seed: str
    at: str  # dotted path to change; "[n]" for list items
    value: Any  # the new value, or DELETE
    path: str  # expected error path
    rule: str  # a fragment the rule must contain
    crd: bool = True  # the CRD schema rejects it as well


MS = "model-server-basic.yaml"
LB = "model-server-loadbalancer-rate-limit.yaml"
AUTH = "model-server-authenticated.yaml"
MR = "model-route-ab-canary.yaml"
MI = "model-infer.yaml"
MODEL = "model.yaml"
HPA = "autoscaling-policy.yaml"
SECRET = "secret-jwks.yaml"
API_KEY = {"enabled": True, "type": "apiKey", "config": {"secretName": "llama-keys"}}

CASES = [
    # DNS-1123 names
    Case("name-uppercase", MS, "metadata.name", "Llama_Server", "metadata.name", "DNS-1123", crd=False),
    Case("namespace-uppercase", MS, "metadata.namespace", "Prod", "metadata.namespace", "DNS-1123 label", crd=False),
    Case("ref-name-space", MS, "spec.modelInferRef.name", "bad name", "spec.modelInferRef.name", "DNS-1123"),
    Case("ref-name-too-long", MS, "spec.modelInferRef.name", "a" * 254, "spec.modelInferRef.name", "253"),
    Case("tls-secret-name", LB, "spec.tls.secretName", "Bad_Secret", "spec.tls.secretName", "DNS-1123"),
    # ports 1-65535
    Case("port-zero", MS, "spec.service.port", 0, "spec.service.port", "at least 1"),
    Case("port-too-big", MS, "spec.service.port", 65536, "spec.service.port", "at most 65535"),
    Case("port-huge", MS, "spec.service.port", 10**30, "spec.service.port", "a huge number must be at most 65535"),
    Case("port-string", MS, "spec.service.port", "8080", "spec.service.port", '"8080" must be an integer'),
    Case("port-float", MS, "spec.service.port", 8080.5, "spec.service.port", "must be an integer"),
    Case("target-port", MS, "spec.service.targetPort", 70000, "spec.service.targetPort", "at most 65535"),
    Case("service-type", MS, "spec.service.type", "Internal", "spec.service.type", "one of ClusterIP, NodePort or LoadBalancer"),
    # durations
    Case("timeout-bare-number", MS, "spec.routing.timeout", "30", "spec.routing.timeout", '"30" is not a duration (use 30s)'),
    Case("timeout-words", MS, "spec.routing.timeout", "abc", "spec.routing.timeout", "is not a duration"),
    Case("timeout-zero", MS, "spec.routing.timeout", "0s", "spec.routing.timeout", "positive duration"),
    Case("timeout-too-long", MS, "spec.routing.timeout", "87660h1s", "spec.routing.timeout",
         '"87660h1s" is longer than 315576000s (about 10 years)', crd=False),
    Case("timeout-int", MS, "spec.routing.timeout", 30, "spec.routing.timeout", "must be a string"),
    Case("interval-bare", MR, "spec.canary.analysis.interval", "5", "spec.canary.analysis.interval", "use 5s"),
    Case("route-timeout", MR, "spec.routes[0].timeout", "1 m", "spec.routes[0].timeout", "is not a duration"),
    # retries and rate limits
    Case("retries-negative", MS, "spec.routing.retries", -1, "spec.routing.retries", "at least 0"),
    Case("rps-zero", LB, "spec.rateLimit.requestsPerSecond", 0, "spec.rateLimit.requestsPerSecond", "at least 1"),
    Case("burst-negative", LB, "spec.rateLimit.burstSize", -5, "spec.rateLimit.burstSize", "at least 1"),
    Case("flag-string", LB, "spec.rateLimit.enabled", "yes", "spec.rateLimit.enabled", '"yes" must be true or false'),
    Case("rps-missing", LB, "spec.rateLimit.requestsPerSecond", DELETE, "spec.rateLimit.requestsPerSecond", "required when rateLimit is enabled", crd=False),
    # paths
    Case("path-relative", MS, "spec.routing.path", "v1/models", "spec.routing.path", 'must start with "/"'),
    Case("path-wildcard", MS, "spec.routing.path", "/v1/models/*", "spec.routing.path", "plain path prefix"),
    Case("path-query", MS, "spec.routing.path", "/v1?x=1", "spec.routing.path", '"?"'),
    Case("path-empty-segment", MS, "spec.routing.path", "/v1//models", "spec.routing.path", '"//"'),
    Case("match-path-double-star", MR, "spec.routes[1].match.path", "/v1/**", "spec.routes[1].match.path", '"**"'),
    Case("front-door-glob", MR, "spec.path", "/v1/*/x", "spec.path", "plain path prefix"),
    Case("path-non-ascii", MS, "spec.routing.path", "/v1/models/café", "spec.routing.path",
         'must be ASCII: write it percent-encoded, as clients send it (/v1/models/caf%C3%A9)'),
    Case("match-path-non-ascii", MR, "spec.routes[1].match.path", "/v1/models/llama-7b/dé/*", "spec.routes[1].match.path",
         "(/v1/models/llama-7b/d%C3%A9/*)"),
    Case("path-control-char", MS, "spec.routing.path", "/v1/\x07", "spec.routing.path", "must be ASCII"),
    # paths Envoy's normalization would change can never match (routing_engine/envoy_rules/path.py)
    Case("path-dot-dot-segment", MS, "spec.routing.path", "/v1/../dots", "spec.routing.path",
         '"/v1/../dots" must not contain a "." or ".." segment: Envoy resolves them before matching, so no request '
         "arrives with one (write /dots)"),
    Case("path-escaped-letter", MS, "spec.routing.path", "/v1/%6dodels/pct", "spec.routing.path",
         '(%6d is "m"): Envoy decodes it before matching (write /v1/models/pct)'),
    Case("path-escaped-dot-segment", MS, "spec.routing.path", "/v1/%2E%2e/x", "spec.routing.path",
         '(%2E is "."): Envoy decodes it before matching (write /x)'),
    Case("path-escaped-tilde", MS, "spec.routing.path", "/v1/%7Euser", "spec.routing.path", "(write /v1/~user)"),
    Case("path-backslash", MS, "spec.routing.path", "/v1\\models", "spec.routing.path",
         'must not contain "\\": Envoy reads it as "/" (write /v1/models)'),
    Case("path-quote", MS, "spec.routing.path", '/v1/"a"', "spec.routing.path",
         'must percent-encode ": Envoy encodes them before matching (write /v1/%22a%22)'),
    Case("path-braces", MS, "spec.routing.path", "/v1/{a|b}", "spec.routing.path", "(write /v1/%7Ba%7Cb%7D)"),
    Case("path-nul", MS, "spec.routing.path", "/v1/%00", "spec.routing.path", "Envoy refuses a request whose path"),
    Case("front-door-dot-segment", MR, "spec.path", "/v1/models/.", "spec.path", "(write /v1/models/)"),
    Case("match-path-dot-segment", MR, "spec.routes[1].match.path", "/v1/models/llama-7b/./debug/*",
         "spec.routes[1].match.path", "(write /v1/models/llama-7b/debug/*)"),
    Case("match-glob-escaped-digit", MR, "spec.routes[1].match.path", "/v1/models/v%31-*", "spec.routes[1].match.path",
         "(write /v1/models/v1-*)"),
    # the paths every port answers itself (SPEC 3.1): a route there never gets its requests
    Case("path-builtin-health", MS, "spec.routing.path", "/health", "spec.routing.path",
         '"/health" is a reserved path: every ModelServer port answers it itself (Envoy\'s liveness check) before '
         "any route; use another path"),
    Case("path-builtin-metrics-slash", MS, "spec.routing.path", "/metrics/", "spec.routing.path",
         '"/metrics/" takes /metrics, a reserved path'),
    Case("front-door-builtin-ready", MR, "spec.path", "/ready", "spec.path", "(the port's readiness check)"),
    Case("match-path-builtin-prefix", MR, "spec.routes[1].match.path", "/metrics/*", "spec.routes[1].match.path",
         '"/metrics/*" takes /metrics, a reserved path'),
    Case("match-path-builtin-exact", MR, "spec.routes[1].match.path", "/health", "spec.routes[1].match.path",
         '"/health" is a reserved path'),
    # required fields and unknown fields
    Case("routing-missing", MS, "spec.routing", DELETE, "spec.routing", "is required"),
    Case("unknown-field", MS, "spec.routing.timout", "30s", "spec.routing.timout", "did you mean timeout?"),
    Case("snake-case-field", MS, "spec.model_infer_ref", {"name": "x"}, "spec.model_infer_ref", "unknown field"),
    Case("top-level-unknown", MS, "specs", {}, "specs", "unknown field"),
    Case("spec-is-list", MS, "spec", [1], "spec", "a list must be a mapping"),
    Case("routes-empty", MR, "spec.routes", [], "spec.routes", "at least 1 item"),
    Case("destination-ref-missing-name", MR, "spec.routes[0].destination.modelServerRef.name", DELETE, "spec.routes[0].destination.modelServerRef.name", "is required"),
    Case("model-id-missing", MODEL, "spec.modelSpec.modelId", DELETE, "spec.modelSpec.modelId", "is required"),
    Case("model-id-empty", MODEL, "spec.modelSpec.modelId", "", "spec.modelSpec.modelId", "must not be empty"),
    # weights and traffic split
    Case("weight-over-100", MR, "spec.routes[3].weight", 101, "spec.routes[3].weight", "at most 100"),
    Case("weight-negative", MR, "spec.routes[3].weight", -1, "spec.routes[3].weight", "at least 0"),
    Case("weight-string", MR, "spec.routes[3].weight", "90%", "spec.routes[3].weight", "must be an integer"),
    Case("split-sum", MR, "spec.canary.trafficSplit.canary", 20, "spec.canary.trafficSplit", "must be 100 (got 90 + 20)", crd=False),
    Case("threshold-over-100", MR, "spec.canary.analysis.threshold", 101, "spec.canary.analysis.threshold", "at most 100"),
    Case("step-weight-zero", MR, "spec.canary.analysis.stepWeight", 0, "spec.canary.analysis.stepWeight", "at least 1"),
    Case("weights-all-zero", MR, "spec.routes", [{"destination": {"modelServerRef": {"name": "a"}}, "weight": 0},
                                                 {"destination": {"modelServerRef": {"name": "b"}}, "weight": 0}],
         "spec.routes[0].weight", "the weights of one group (spec.routes[0], spec.routes[1]) are all 0", crd=False),
    Case("canary-without-pair", MR, "spec.routes[4]", DELETE, "spec.canary",
         "canary needs exactly one group (entries with identical match) with exactly two destinations, stable then "
         "canary; found 0", crd=False),
    # header / query match forms
    Case("header-int", MR, "spec.routes[0].match.headers.x-user-tier", 5, "spec.routes[0].match.headers.x-user-tier", 'quote it: "5"', crd=False),
    Case("header-two-forms", MR, "spec.routes[0].match.headers.x-experiment", {"exact": "a", "prefix": "b"}, "spec.routes[0].match.headers.x-experiment", "exactly one of", crd=False),
    Case("header-no-form", MR, "spec.routes[0].match.headers.x-experiment", {}, "spec.routes[0].match.headers.x-experiment", "exactly one of", crd=False),
    Case("header-unknown-form", MR, "spec.routes[0].match.headers.x-experiment", {"suffix": "a"}, "spec.routes[0].match.headers.x-experiment.suffix", "unknown field", crd=False),
    Case("header-bad-regex", MR, "spec.routes[0].match.headers.x-experiment", {"regex": "(["}, "spec.routes[0].match.headers.x-experiment.regex", "not a regex Envoy's RE2 accepts", crd=False),
    # Envoy's own rules (routing_engine/envoy_rules): what validate accepts, Envoy accepts.
    Case("header-possessive", MR, "spec.routes[0].match.headers.x-experiment", {"regex": "a++"}, "spec.routes[0].match.headers.x-experiment.regex", "bad repetition operator", crd=False),
    Case("header-atomic-group", MR, "spec.routes[0].match.headers.x-experiment", {"regex": "(?>a)"}, "spec.routes[0].match.headers.x-experiment.regex", "invalid perl operator", crd=False),
    Case("header-regex-too-big", MR, "spec.routes[0].match.headers.x-experiment", {"regex": "(abc){1,30}"}, "spec.routes[0].match.headers.x-experiment.regex", "program of 183 instructions", crd=False),
    Case("header-regex-wide-escape", MR, "spec.routes[0].match.headers.x-experiment", {"regex": "\\x{263a}"}, "spec.routes[0].match.headers.x-experiment.regex", "invalid escape sequence", crd=False),
    Case("header-empty-regex", MR, "spec.routes[0].match.headers.x-experiment", {"regex": ""}, "spec.routes[0].match.headers.x-experiment.regex", "empty", crd=False),
    Case("header-empty-prefix", MR, "spec.routes[0].match.headers.x-experiment", {"prefix": ""}, "spec.routes[0].match.headers.x-experiment.prefix", "must not be empty", crd=False),
    Case("glob-too-big", MR, "spec.routes[0].match.path", "/v1/" + "a" * 100 + "*", "spec.routes[0].match.path", "glob whose regex compiles", crd=False),
    Case("header-lookahead", MR, "spec.routes[0].match.headers.x-experiment", {"regex": "(?=a)b"}, "spec.routes[0].match.headers.x-experiment.regex", "RE2", crd=False),
    Case("header-name", MR, "spec.routes[0].match.headers", {"bad header": "a"}, 'spec.routes[0].match.headers["bad header"]', "key", crd=False),
    Case("query-present-false", MR, "spec.routes[1].match.queryParams.debug", {"present": False}, "spec.routes[1].match.queryParams.debug", "present: false", crd=False),
    Case("query-list", MR, "spec.routes[1].match.queryParams.debug", ["a"], "spec.routes[1].match.queryParams.debug", "must be a string", crd=False),
    # query parameters are compared as sent, undecoded (routing_engine/envoy_rules/query.py)
    Case("query-value-space", MR, "spec.routes[1].match.queryParams.debug", "v2 beta",
         "spec.routes[1].match.queryParams.debug",
         '"v2 beta" must be written percent-encoded, as clients send it: v2%20beta (an HTML form sends a space as '
         '"+": v2+beta); Envoy compares the query string undecoded', crd=False),
    Case("query-value-ampersand", MR, "spec.routes[1].match.queryParams.debug", {"exact": "a&b"},
         "spec.routes[1].match.queryParams.debug.exact", "as clients send it: a%26b;", crd=False),
    Case("query-prefix-non-ascii", MR, "spec.routes[1].match.queryParams.debug", {"prefix": "café"},
         "spec.routes[1].match.queryParams.debug.prefix", "as clients send it: caf%C3%A9;", crd=False),
    Case("query-value-hash", MR, "spec.routes[1].match.queryParams.debug", "#top",
         "spec.routes[1].match.queryParams.debug", "as clients send it: %23top;", crd=False),
    Case("query-value-control", MR, "spec.routes[1].match.queryParams.debug", "a\tb",
         "spec.routes[1].match.queryParams.debug", "as clients send it: a%09b;", crd=False),
    Case("query-name-space", MR, "spec.routes[1].match.queryParams", {"user tier": "premium"},
         'spec.routes[1].match.queryParams["user tier"]', "as clients send it: user%20tier (an HTML form sends a "
         'space as "+": user+tier)', crd=False),
    Case("query-name-equals", MR, "spec.routes[1].match.queryParams", {"a=b": "1"},
         'spec.routes[1].match.queryParams["a=b"]', "as clients send it: a%3Db;", crd=False),
    Case("query-name-non-ascii", MR, "spec.routes[1].match.queryParams", {"café": {"present": True}},
         'spec.routes[1].match.queryParams["café"]', "as clients send it: caf%C3%A9;", crd=False),
    # jwt and tls
    Case("jwt-no-issuer", AUTH, "spec.authentication.config.issuer", DELETE, "spec.authentication.config.issuer", "required for type jwt", crd=False),
    Case("jwt-no-keys", AUTH, "spec.authentication.config.jwksUri", DELETE, "spec.authentication.config", "jwksUri or jwksSecretName", crd=False),
    Case("jwt-bad-uri", AUTH, "spec.authentication.config.jwksUri", "ftp://x", "spec.authentication.config.jwksUri", "http or https URL", crd=False),
    Case("jwt-uri-bad-port", AUTH, "spec.authentication.config.jwksUri", "https://keys.example:99999/jwks", "spec.authentication.config.jwksUri", "not a URL Envoy can fetch", crd=False),
    Case("jwt-uri-no-host", AUTH, "spec.authentication.config.jwksUri", "https:///jwks", "spec.authentication.config.jwksUri", "no host", crd=False),
    Case("jwt-uri-space", AUTH, "spec.authentication.config.jwksUri", "https://keys example/jwks", "spec.authentication.config.jwksUri", "spaces", crd=False),
    Case("jwt-unknown-config", AUTH, "spec.authentication.config.issuerr", "x", "spec.authentication.config.issuerr", "unknown field for type jwt", crd=False),
    Case("auth-type", AUTH, "spec.authentication.type", "oauth", "spec.authentication.type", "one of jwt or apiKey"),
    Case("tls-no-secret", LB, "spec.tls.secretName", DELETE, "spec.tls.secretName", "required when tls is enabled", crd=False),
    # authentication.config rules the engine would otherwise be the first to check
    Case("apikey-header-space", AUTH, "spec.authentication", {**API_KEY, "config": {**API_KEY["config"], "header": "x api key"}},
         "spec.authentication.config.header", '"x api key" is not an HTTP header name', crd=False),
    Case("apikey-header-int", AUTH, "spec.authentication", {**API_KEY, "config": {**API_KEY["config"], "header": 5}},
         "spec.authentication.config.header", "5 must be a non-empty string", crd=False),
    Case("apikey-header-too-long", AUTH, "spec.authentication", {**API_KEY, "config": {**API_KEY["config"], "header": "x" * 257}},
         "spec.authentication.config.header", "at most 256 characters", crd=False),
    Case("apikey-secret-name", AUTH, "spec.authentication", {**API_KEY, "config": {"secretName": "Llama Keys"}},
         "spec.authentication.config.secretName", '"Llama Keys" is not a DNS-1123 name', crd=False),
    Case("jwt-audiences-string", AUTH, "spec.authentication.config.audiences", "api",
         "spec.authentication.config.audiences", '"api" must be a list of non-empty strings', crd=False),
    Case("jwt-audiences-empty-item", AUTH, "spec.authentication.config.audiences", ["api", ""],
         "spec.authentication.config.audiences", "a list must be a list of non-empty strings", crd=False),
    Case("jwt-audience-empty", AUTH, "spec.authentication.config.audience", "",
         "spec.authentication.config.audience", '"" must be a non-empty string', crd=False),
    Case("jwt-forward-header", AUTH, "spec.authentication.config.forwardHeader", "yes",
         "spec.authentication.config.forwardHeader", '"yes" must be true or false', crd=False),
    Case("jwt-jwks-secret-name-empty", AUTH, "spec.authentication.config.jwksSecretName", "",
         "spec.authentication.config.jwksSecretName", '"" must be a non-empty string', crd=False),
    # Secrets as the API server reads them
    Case("secret-data-not-base64", SECRET, "data", {"jwks": "!!!not-base64!!!"}, "data.jwks",
         "is not base64", crd=False),
    Case("secret-data-unpadded", SECRET, "data", {"jwks": "eA"}, "data.jwks", "with = padding", crd=False),
    Case("secret-key-slash", SECRET, "stringData", {"a/b": "x"}, 'stringData["a/b"]',
         "key must be at most 253 letters, digits", crd=False),
    Case("secret-key-dot-dot", SECRET, "data", {"..x": "eA=="}, 'data["..x"]', "must not be '.' or '..'", crd=False),
    # a canary compares two servers
    Case("canary-same-server", MR, "spec.routes[4].destination.modelServerRef.name", "llama-server",
         "spec.routes[4].destination.modelServerRef",
         "the canary destination is ModelServer default/llama-server, as is the stable one (spec.routes[3]); a "
         "canary needs two different ModelServers", crd=False),
    Case("canary-same-server-namespace-written", MR, "spec.routes[4].destination.modelServerRef",
         {"name": "llama-server", "namespace": "default"}, "spec.routes[4].destination.modelServerRef",
         "a canary needs two different ModelServers", crd=False),
    # YAML values shown as YAML writes them, never as Python's repr
    Case("header-null", MR, "spec.routes[0].match.headers.x-user-tier", None, "spec.routes[0].match.headers.x-user-tier",
         "null must be a string (exact match) or a mapping", crd=False),
    Case("header-bool", MR, "spec.routes[0].match.headers.x-user-tier", True, "spec.routes[0].match.headers.x-user-tier",
         'true must be a string (exact match; quote it: "true")', crd=False),
    Case("query-null", MR, "spec.routes[1].match.queryParams.debug", None, "spec.routes[1].match.queryParams.debug",
         "(to match any value: present: true)", crd=False),
    Case("quantity-null", MI, "spec.resources.requests.cpu", None, "spec.resources.requests.cpu",
         'null is not a quantity', crd=False),
    # workload and registry
    Case("quantity-float", MI, "spec.resources.requests.cpu", 0.5, "spec.resources.requests.cpu", 'quote it: "0.5"'),
    Case("quantity-unit", MI, "spec.resources.limits.memory", "4GB", "spec.resources.limits.memory", "not a quantity"),
    # what the API server refuses in a container's resources (routing_engine.api.quantities)
    Case("gpu-fraction", MI, "spec.resources", {"limits": {"nvidia.com/gpu": "1.5"}},
         'spec.resources.limits["nvidia.com/gpu"]', '"1.5" must be a whole number (nvidia.com/gpu is an extended '
         'resource)', crd=False),
    Case("gpu-millis", MI, "spec.resources", {"limits": {"nvidia.com/gpu": "500m"}},
         'spec.resources.limits["nvidia.com/gpu"]', '"500m" must be a whole number', crd=False),
    Case("gpu-request-not-limit", MI, "spec.resources.requests", {"nvidia.com/gpu": "2"},
         'spec.resources.requests["nvidia.com/gpu"]', '"2" must equal the limit ("1"): Kubernetes does not overcommit '
         'nvidia.com/gpu', crd=False),
    Case("hugepages-request-not-limit", MI, "spec.resources", {"requests": {"hugepages-2Mi": "1Gi", "memory": "2Gi"},
                                                               "limits": {"hugepages-2Mi": "2Gi"}},
         "spec.resources.requests.hugepages-2Mi", '"1Gi" must equal the limit ("2Gi")', crd=False),
    Case("hugepages-alone", MI, "spec.resources", {"limits": {"hugepages-2Mi": "1Gi"}}, "spec.resources",
         "hugepages need cpu or memory", crd=False),
    Case("memory-request-over-limit", MI, "spec.resources.requests.memory", "8Gi", "spec.resources.requests.memory",
         '"8Gi" must not exceed the limit ("4Gi")', crd=False),
    Case("cpu-request-over-limit", MI, "spec.resources.requests.cpu", "2001m", "spec.resources.requests.cpu",
         '"2001m" must not exceed the limit ("2")', crd=False),
    Case("quantity-negative", MI, "spec.resources.limits.cpu", "-1", "spec.resources.limits.cpu",
         '"-1" must not be negative', crd=False),
    Case("quantity-fractional-exponent", MI, "spec.resources.limits.cpu", "1e1.5", "spec.resources.limits.cpu",
         "not a quantity", crd=False),
    Case("resource-name-typo", MI, "spec.resources.limits", {"memroy": "4Gi"}, "spec.resources.limits.memroy",
         "memroy is not a container resource", crd=False),
    Case("resource-name-bare-gpu", MI, "spec.resources.limits", {"gpu": 1}, "spec.resources.limits.gpu",
         "gpu is not a container resource", crd=False),
    Case("resource-name-two-slashes", MI, "spec.resources.limits", {"nvidia.com/gpu/a100": 1},
         'spec.resources.limits["nvidia.com/gpu/a100"]', "is not a resource name", crd=False),
    Case("replicas-negative", MI, "spec.replicas", -1, "spec.replicas", "at least 0"),
    Case("replicas-bool", MI, "spec.replicas", True, "spec.replicas", "true must be an integer"),
    Case("replicas-too-many", MI, "spec.replicas", 1001, "spec.replicas", "1001 must be at most 1000"),
    Case("autoscaling-max-too-many", MI, "spec.autoscaling.maxReplicas", 10**6, "spec.autoscaling.maxReplicas", "at most 1000"),
    Case("hpa-max-too-many", HPA, "spec.maxReplicas", 5000, "spec.maxReplicas", "at most 1000"),
    Case("autoscaling-bounds", MI, "spec.autoscaling.minReplicas", 5, "spec.autoscaling.minReplicas", "must not exceed maxReplicas (4)", crd=False),
    Case("toleration-seconds-string", MI, "spec.tolerations[0].tolerationSeconds", "30", "spec.tolerations[0].tolerationSeconds", "must be an integer"),
    Case("toleration-operator", MI, "spec.tolerations[0].operator", "Maybe", "spec.tolerations[0].operator", "one of Exists or Equal"),
    Case("hpa-max-zero", HPA, "spec.maxReplicas", 0, "spec.maxReplicas", "at least 1"),
    Case("hpa-target-missing", HPA, "spec.targetRef", DELETE, "spec.targetRef", "is required"),
    # the envelope
    Case("kind-unknown", MS, "kind", "ModelServers", "kind", "not supported (supported: ModelServer", crd=False),
    Case("kind-missing", MS, "kind", DELETE, "kind", "is required", crd=False),
    Case("api-version-wrong", MS, "apiVersion", "networking.matrixinfer.ai/v1", "apiVersion", "use networking.matrixinfer.ai/v1alpha1", crd=False),
    Case("api-version-missing", MS, "apiVersion", DELETE, "apiVersion", "is required", crd=False),
    Case("metadata-missing", MS, "metadata", DELETE, "metadata", "is required", crd=False),
    Case("metadata-name-missing", MS, "metadata.name", DELETE, "metadata.name", "is required", crd=False),
]


def _mutate(doc: dict[str, Any], at: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    parts: list[str | int] = []
    for piece in at.split("."):
        name, _, rest = piece.partition("[")
        parts.append(name)
        if rest:
            parts.append(int(rest.rstrip("]")))
    node: Any = out
    for part in parts[:-1]:
        node = node[part]
    if value is DELETE:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_broken_copy_is_rejected_with_its_field_path(case: Case) -> None:
    doc = _mutate(_seed(case.seed), case.at, case.value)
    objects, errors = load_text(yaml.safe_dump(doc), f"broken/{case.seed}")
    assert objects == []
    matching = [e for e in errors if e.path == case.path and case.rule in e.rule]
    assert matching, f"no error at {case.path} containing {case.rule!r}; got {[str(e) for e in errors]}"
    line = str(matching[0])
    assert line.startswith(f"broken/{case.seed}#1: ")
    assert f"{case.path}: " in line and "\n" not in line
    meta = doc.get("metadata")
    if isinstance(doc.get("kind"), str) and isinstance(meta, dict) and isinstance(meta.get("name"), str):
        assert line.startswith(f"broken/{case.seed}#1: {doc['kind']} {meta.get('namespace', 'default')}/{meta['name']}: ")
    assert not any(f"{word} " in line for word in ("None", "True", "False")), "a Python repr of a YAML value"
    assert "pydantic" not in line and "https://" not in line.replace(str(case.value), "")


@pytest.mark.parametrize("case", [c for c in CASES if c.crd], ids=[c.id for c in CASES if c.crd])
def test_crd_schema_rejects_it_too(case: Case) -> None:
    doc = _mutate(_seed(case.seed), case.at, case.value)
    assert list(validator(doc["kind"]).iter_errors(doc)), f"the CRD schema accepts {case.id}"


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
