"""One error type carrying a machine-readable code; one place maps codes to HTTP statuses.

The codes are MLflow's (its client turns them into MlflowException with the same code), so the native
API and the MLflow-compatible API speak the same error language.
"""

from __future__ import annotations

from typing import Any

# MLflow's own mapping (mlflow/protos/databricks.proto + mlflow.exceptions) where it has one.
HTTP_STATUS: dict[str, int] = {
    "BAD_REQUEST": 400,
    "INVALID_PARAMETER_VALUE": 400,
    "MALFORMED_REQUEST": 400,
    "INVALID_STATE": 400,
    "RESOURCE_ALREADY_EXISTS": 400,
    "RESOURCE_LIMIT_EXCEEDED": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "RESOURCE_DOES_NOT_EXIST": 404,
    "ENDPOINT_NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "CONFLICT": 409,
    "PAYLOAD_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "REQUEST_LIMIT_EXCEEDED": 429,
    "INTERNAL_ERROR": 500,
    "TEMPORARILY_UNAVAILABLE": 503,
}


class TesseraError(Exception):
    code = "INTERNAL_ERROR"

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or {}

    @property
    def status_code(self) -> int:
        return HTTP_STATUS.get(self.code, 500)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error_code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class InvalidParameter(TesseraError):
    code = "INVALID_PARAMETER_VALUE"


class NotFound(TesseraError):
    code = "RESOURCE_DOES_NOT_EXIST"


class AlreadyExists(TesseraError):
    code = "RESOURCE_ALREADY_EXISTS"


class InvalidState(TesseraError):
    code = "INVALID_STATE"


class Unauthenticated(TesseraError):
    code = "UNAUTHENTICATED"


class PermissionDenied(TesseraError):
    code = "PERMISSION_DENIED"


class Conflict(TesseraError):
    code = "CONFLICT"


class LimitExceeded(TesseraError):
    code = "RESOURCE_LIMIT_EXCEEDED"
