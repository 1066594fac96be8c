"""The one error family: every failure the service reports is a ``ServiceError``.

Status and code live on the class (as in Werkzeug), so raising the right subclass is all a
view or a core module has to do; ``service.api.handlers`` turns any of them, and any routing
error or unexpected exception, into the one JSON shape:
``{"error": {"code": "...", "message": "...", "details": {...}}}``.
Core modules import this file, so it never imports Flask.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """Base of every error the service answers with; subclasses set status and code."""

    status: int = 500
    code: str = "internal_error"
    message: str = "The server could not complete the request."

    def __init__(self, message: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.details = details or {}

    @property
    def headers(self) -> dict[str, str]:
        """Extra response headers this error needs (e.g. ``WWW-Authenticate``)."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class BadRequest(ServiceError):
    status, code, message = 400, "bad_request", "The request is malformed."


class InvalidJSON(BadRequest):
    code, message = "invalid_json", "The request body is not valid JSON."


class ValidationFailed(BadRequest):
    """Input that is well-formed JSON but does not match the envelope or the model schema."""

    status, code, message = 422, "validation_failed", "The input does not match the schema."


class Unauthorized(ServiceError):
    status, code, message = 401, "unauthorized", "A valid API key is required."

    @property
    def headers(self) -> list[tuple[str, str]]:  # type: ignore[override]
        # Basic lets a browser prompt for a key (the monitoring page); API clients use Bearer. One
        # header per challenge: browsers (Chromium) fail to parse several in one header.
        return [("WWW-Authenticate", 'Bearer realm="models"'),
                ("WWW-Authenticate", 'Basic realm="models", charset="UTF-8"')]


class Forbidden(ServiceError):
    status, code, message = 403, "forbidden", "The API key lacks the scope this needs."


class HostNotAllowed(Forbidden):
    code, message = "host_not_allowed", "This server does not answer to that Host name (see ALLOWED_HOSTS)."


class CrossSiteRequest(Forbidden):
    code, message = "cross_site_request", "State-changing requests from another site are refused."


class NotFound(ServiceError):
    status, code, message = 404, "not_found", "No such resource."


class ModelNotFound(NotFound):
    code, message = "model_not_found", "No such model."


class VersionNotFound(NotFound):
    code, message = "version_not_found", "No such model version."


class LabelNotFound(NotFound):
    code, message = "label_not_found", "No such label."


class Conflict(ServiceError):
    status, code, message = 409, "conflict", "The request conflicts with the current state."


class ChangeRefused(Conflict):
    """A registry change the current state does not allow (unknown or unloadable version, no canary, ...)."""

    code, message = "change_refused", "The change was refused."


class RegistryChangeBlocked(Conflict):
    """A registry change refused because registry.json cannot be read: an admin call never overwrites it."""

    code, message = "registry_unreadable", "The model's registry.json cannot be read; nothing was changed."


class PayloadTooLarge(ServiceError):
    status, code, message = 413, "payload_too_large", "The request body is too large."


class TooManyElements(ValidationFailed):
    """A body too big for what it could carry, refused before it is read: more arrays and objects than
    the row limit allows (JSON, before parsing), or more columns than the model's features allow
    (``service.protocols.check_columns``: before a DataFrame is built or a row validated)."""

    code, message = "too_many_elements", "The body holds more rows (arrays and objects) than MAX_BATCH_ROWS allows."


class RetryLater(ServiceError):
    """A refusal that passes with time: answered with ``Retry-After`` (whole seconds, at least 1)."""

    def __init__(self, message: str | None = None, details: dict[str, Any] | None = None, *, retry_after: int = 1):
        super().__init__(message, details)
        self.retry_after = max(1, int(retry_after))

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class RateLimited(RetryLater):
    """A caller over its requests or rows per second."""

    status, code, message = 429, "rate_limited", "Too many requests for this API key; retry later."


class UnsupportedMediaType(ServiceError):
    status, code, message = 415, "unsupported_media_type", "Send the body as application/json."


class NotReady(ServiceError):
    status, code, message = 503, "not_ready", "Not every production model version is loaded."


class ModelUnavailable(ServiceError):
    """The model exists but no verified version can answer (failed or still loading)."""

    status, code, message = 503, "model_unavailable", "The model version is not available."


class RegistryStateUnavailable(ServiceError):
    """A read of the registry state (rollout, history, comparison) while registry.json cannot be read."""

    status, code, message = 503, "registry_unreadable", "The model's registry.json cannot be read."


class MonitoringBusy(RetryLater):
    """Every slot for large monitoring reports is taken (``MONITORING_LARGE_REPORTS``): retry shortly."""

    status, code, message = 503, "monitoring_busy", "Other large monitoring reports are being computed; retry shortly."


class ExplainBusy(RetryLater):
    """This worker is computing another explanation: refused at once, never queued, so it stays free for the rest."""

    status, code, message = 503, "explain_busy", "This worker is computing another explanation; retry shortly."


class StoreUnavailable(ServiceError):
    status, code, message = 503, "store_unavailable", "The database could not record this; try again."


class PredictionFailed(ServiceError):
    status, code, message = 500, "prediction_failed", "The model failed to compute a prediction."


class ModelOutputInvalid(PredictionFailed):
    """A model that answered NaN or infinity, which JSON cannot carry: a model failure, like one that raises."""

    code, message = "model_output_invalid", "The model returned values that are not finite numbers."


class InputOutOfDomain(ValidationFailed):
    """Finite inputs so far outside a version's training data that a healthy model overflows on them.

    The client's doing, not the model's: a 4xx, so no fallback answers and the version's error
    rate (the rollout guard's) does not count it.
    """

    code, message = "input_out_of_domain", "The model gives no finite answer for inputs this far outside its training data."


class ArtifactError(Exception):
    """An artifact on disk that must not be loaded: bad hash, missing file, bad manifest."""


class RegistryUnreadable(ArtifactError):
    """A registry.json that cannot be read or is not a registry state.

    ``reason`` names the file relative to the model's folder, never the server's absolute path,
    so it may be shown to API callers; ``last_good`` says whether a verified copy exists to
    restore from.
    """

    def __init__(self, model: str, reason: str, *, last_good: bool = False):
        self.model, self.reason, self.last_good = model, reason, last_good
        if last_good:
            fix = f"restore the last good state with `python -m service registry restore {model}`"
        else:
            fix = "there is no last-good copy: repair registry.json by hand"
        super().__init__(f"model {model!r}: {reason}; {fix}")


class ConfigError(Exception):
    """A bad environment variable; the message names it."""


class QualityGateFailed(Exception):
    """A packaged model whose metrics miss a threshold the user asked for."""
