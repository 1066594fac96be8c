"""Per route, what the OpenAPI document cannot read from the view itself: the errors raised deeper
down, the body schema a view loads, its query parameters and the shape of its answer.

Keyed by endpoint (``blueprint.view``); ``service.api.openapi_routes`` reads these tables.
"""

from __future__ import annotations

from typing import Any

from service import errors
from service.api import admin, monitoring
from service.explain import past

#: Every route: a Host this server does not answer to, and a fault of ours.
ALWAYS = (errors.HostNotAllowed, errors.ServiceError)
SCOPED = (errors.Unauthorized, errors.Forbidden)
#: A state-changing request: the CSRF checks, and a body that must be JSON and fit.
WRITES = (errors.CrossSiteRequest, errors.UnsupportedMediaType, errors.InvalidJSON, errors.PayloadTooLarge,
          errors.ValidationFailed)
BY_PARAMETER = {"name": (errors.ModelNotFound,), "version": (errors.VersionNotFound,), "label": (errors.LabelNotFound,)}
#: Every call counts against the caller's request rate (``service.api.limits``); predict-like bodies are
#: also counted for rows and refused unparsed when they hold too many arrays and objects or columns.
LIMITED = (errors.RateLimited,)
PREDICT = (errors.LabelNotFound, errors.ModelUnavailable, errors.RegistryStateUnavailable, errors.PredictionFailed,
           errors.ModelOutputInvalid, errors.InputOutOfDomain, errors.StoreUnavailable, *LIMITED,
           errors.TooManyElements)
#: Large monitoring reports wait for a slot (``MONITORING_LARGE_REPORTS``) or are refused at once.
REPORTS = (errors.ValidationFailed, errors.StoreUnavailable, errors.MonitoringBusy, *LIMITED)
#: What a view raises beyond what its kind of route does (from the views and the core they call).
RAISES: dict[str, tuple[type[errors.ServiceError], ...]] = {
    "predict.predict": PREDICT,
    "mlflow.invocations": (errors.ModelNotFound, errors.BadRequest, *PREDICT),
    "mlflow.ping": (errors.NotReady,),
    "vertex.health": (errors.NotReady,),
    "vertex.predict": (errors.ModelNotFound, *PREDICT),
    "mlflow.version": (errors.ModelNotFound, errors.LabelNotFound, errors.ModelUnavailable,
                       errors.RegistryStateUnavailable),
    "health.readyz": (errors.NotReady,),
    "v2.model_metadata": (errors.ModelUnavailable,),
    "v2.infer": (errors.BadRequest, *PREDICT),
    "admin.set_label": (errors.ChangeRefused, errors.RegistryChangeBlocked),
    "admin.remove_label": (errors.ChangeRefused, errors.RegistryChangeBlocked),
    "admin.set_rollout": (errors.ChangeRefused, errors.RegistryChangeBlocked),
    "admin.promote": (errors.ChangeRefused, errors.RegistryChangeBlocked),
    "admin.rollback": (errors.ChangeRefused, errors.RegistryChangeBlocked),
    "admin.show_rollout": (errors.RegistryStateUnavailable,),
    "admin.history": (errors.RegistryStateUnavailable,),
    "admin.compare": (errors.RegistryStateUnavailable, errors.ValidationFailed, errors.StoreUnavailable),
    "explain.explain": PREDICT,
    "explain.logged": (past.PredictionNotFound, past.InputsNotStored, errors.VersionNotFound,
                       errors.ModelUnavailable, *LIMITED),
    "monitoring.feedback": (errors.ModelUnavailable, errors.StoreUnavailable, *LIMITED, errors.TooManyElements),
    "subjects.erase": (errors.StoreUnavailable,),
    "monitoring.monitoring": REPORTS,
    "dashboard.overview": REPORTS,
    "dashboard.model": REPORTS,
}
#: The body each view loads, by the schema that validates it.
BODIES: dict[str, str] = {"predict.predict": "PredictRequest", "vertex.predict": "PredictRequest",
                          "mlflow.invocations": "InvocationRequest",
                          "admin.set_label": "LabelChange", "admin.set_rollout": "RolloutChange",
                          "admin.promote": "Reason", "admin.rollback": "Reason", "monitoring.feedback": "Feedback",
                          "v2.infer": "InferenceRequest", "subjects.erase": "SubjectErasure"}
OPTIONAL_BODIES = frozenset({"admin.promote", "admin.rollback"})
WINDOW = {"name": "window", "in": "query", "required": False, "description": "Predictions per version to look at."}
#: Query parameters a view reads (``int_arg`` ranges are the views' constants).
QUERIES: dict[str, list[dict[str, Any]]] = {
    "monitoring.monitoring": [{**WINDOW, "schema": {"type": "integer", "minimum": 10, "maximum": monitoring.MAX_WINDOW}},
                              {"name": "minutes", "in": "query", "required": False,
                               "schema": {"type": "integer", "minimum": 1, "maximum": monitoring.MAX_MINUTES}}],
    "admin.compare": [{"name": "window", "in": "query", "required": False, "description": "Seconds to compare over.",
                       "schema": {"type": "integer", "minimum": 1, "maximum": admin.MAX_WINDOW_SECONDS}}],
    "admin.remove_label": [{"name": "reason", "in": "query", "required": False, "schema": {"type": "string"}}],
    "dashboard.overview": [{**WINDOW, "schema": {"type": "integer", "minimum": 10, "maximum": 100_000}}],
    "dashboard.model": [{**WINDOW, "schema": {"type": "integer", "minimum": 10, "maximum": 100_000}}],
}
#: What a successful call answers with, where the body has a documented shape.
ANSWERS: dict[str, tuple[str, str]] = {
    "predict.predict": ("application/json", "PredictResponse"),
    "vertex.predict": ("application/json", "PredictResponse"),
    "explain.explain": ("application/json", "PredictResponse"),
    "explain.logged": ("application/json", "LoggedExplanation"),
    "mlflow.invocations": ("application/json", "InvocationResponse"),
    "monitoring.feedback": ("application/json", "FeedbackResult"),
    "subjects.erase": ("application/json", "ErasureResult"),
    "metrics.scrape": ("text/plain", ""),
    "dashboard.overview": ("text/html", ""), "dashboard.model": ("text/html", ""), "openapi.docs": ("text/html", ""),
}
#: Answers that are not errors but not 200 either: V2's readiness probes say "no" with a 400.
NOT_READY = {"description": "Not ready", "content": {"application/json": {"schema": {
    "type": "object", "required": ["ready"], "properties": {"ready": {"const": False}, "name": {"type": "string"}}}}}}
OTHER_ANSWERS: dict[str, dict[str, Any]] = {"v2.ready": {"400": NOT_READY}, "v2.model_ready": {"400": NOT_READY}}
