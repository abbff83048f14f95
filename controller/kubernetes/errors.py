"""Typed API errors, so callers branch on meaning (retry a Conflict, re-list on Gone)
rather than on HTTP codes. Messages come from the API server's Status and are cut short:
they are safe to log and never carry a request body (which may hold Secret data)."""

from __future__ import annotations

_MAX_MESSAGE = 300


class ApiError(Exception):
    """Any non-success answer from the API server (or a broken connection: code 0)."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        self.code = code
        self.reason = reason
        self.message = message[:_MAX_MESSAGE]
        super().__init__(f"{code} {reason}: {self.message}")


class ConfigError(Exception):
    """No usable credentials: neither the kubeconfig nor an in-cluster service account."""


class NotFound(ApiError):
    """404: the object (or the resource type) does not exist."""


class Conflict(ApiError):
    """409 Conflict: the write carried a stale resourceVersion; re-read and retry."""


class AlreadyExists(ApiError):
    """409 AlreadyExists: a create raced another writer; read the existing object."""


class Gone(ApiError):
    """410 Gone / Expired: the resourceVersion is older than the server's history; re-list."""


def error_for(code: int, reason: str, message: str) -> ApiError:
    """The typed error for an API Status."""
    if code == 404:
        return NotFound(code, reason, message)
    if code == 409:
        cls = AlreadyExists if reason == "AlreadyExists" else Conflict
        return cls(code, reason, message)
    if code == 410:
        return Gone(code, reason, message)
    return ApiError(code, reason, message)
