"""Configuration: one frozen, typed object read from the environment once.

Every field documents itself where it is declared; ``Config.from_env()`` is the only place
that reads ``os.environ`` and it names the variable in any error. Tests build ``Config(...)``
directly.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from service.config_platforms import with_platform_defaults
from service.config_values import PARSERS, shown_default
from service.errors import ConfigError

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _env(name: str, help: str, **kwargs: Any) -> Any:
    """Declare a field read from environment variable ``name``."""
    return field(metadata={"env": name, "help": help}, **kwargs)


@dataclass(frozen=True)
class Config:
    host: str = _env("HOST", "Address to bind; anything but loopback needs API keys.", default="127.0.0.1")
    port: int = _env("PORT", "TCP port to bind (unset: Vertex AI's AIP_HTTP_PORT or SageMaker's "
                     "SAGEMAKER_BIND_TO_PORT when the platform sets one).", default=8000)
    workers: int = _env("WEB_CONCURRENCY", "Gunicorn worker processes.", default=2)
    threads: int = _env(
        "THREADS", "Threads per Gunicorn worker that run requests (behind a declared proxy: gthread when > 1, "
        "else sync).", default=1,
    )
    timeout: int = _env("WORKER_TIMEOUT", "Seconds before a silent worker is killed and replaced.", default=60)
    request_read_timeout: float = _env(
        "REQUEST_READ_TIMEOUT", "With no FORWARDED_ALLOW_IPS: seconds a client has to send a whole request "
        "(headers and body; it is buffered before a thread serves it) before it is disconnected.", default=30.0,
    )
    worker_max_requests: int = _env(
        "WORKER_MAX_REQUESTS", "Replace a worker after about this many requests (jittered by a fifth); 0 = never.",
        default=100_000,
    )
    worker_memory_growth_mb: float = _env(
        "WORKER_MEMORY_GROWTH_MB", "Replace a worker whose resident memory grew this much since it was ready; 0 = off.",
        default=512.0,
    )
    artifacts_dir: Path = _env("ARTIFACTS_DIR", "Root of the model registry on disk (unset on Azure ML: the "
                               "registered model's folder, AZUREML_MODEL_DIR or its artifacts/ folder).",
                               default=Path("artifacts"))
    api_keys_file: Path | None = _env("API_KEYS_FILE", "JSON file of hashed API keys; unset = open on loopback.", default=None)
    allow_unauthenticated: bool = _env(
        "ALLOW_UNAUTHENTICATED", "Serve predict/read without API keys to any client, not just loopback (explicit opt-in).",
        default=False,
    )
    local_admin_keys_file: Path = _env(
        "LOCAL_ADMIN_KEYS_FILE", "Without API_KEYS_FILE: hashed keys for admin calls (and proxied requests), "
        "made by `make serve`.", default=Path("var/local-admin-keys.json"),
    )
    forwarded_allow_ips: tuple[str, ...] = _env(
        "FORWARDED_ALLOW_IPS", "Comma-separated proxy addresses or networks whose X-Forwarded-* headers are believed; "
        "* = any peer.", default=(),
    )
    allowed_hosts: tuple[str, ...] = _env(
        "ALLOWED_HOSTS", "Comma-separated Host names served (DNS-rebinding guard), * = any; unset = the loopback names "
        "and HOST (any when HOST is a wildcard) for requests not through a proxy.", default=(),
    )
    signing_key: str | None = _env(
        "MODEL_SIGNING_KEY", "When set, manifests must carry a valid HMAC-SHA256 signature (shared secret; "
        "MODEL_TRUSTED_KEYS is the recommended mode).", default=None
    )
    trusted_keys: tuple[str, ...] = _env(
        "MODEL_TRUSTED_KEYS", "Comma-separated Ed25519 public key files or folders of them (*.pub, *.pem); when set, "
        "manifests must carry a signature by one of these keys (several at once: rotation).", default=(),
    )
    signing_private_key_file: Path | None = _env(
        "MODEL_SIGNING_PRIVATE_KEY_FILE", "Ed25519 private key packaging signs manifests with (never needed by a "
        "server; made by `keys signing-keygen`).", default=None,
    )
    allow_unsigned_models: bool = _env(
        "ALLOW_UNSIGNED_MODELS", "Serve on a non-loopback address without verifying model signatures "
        "(explicit opt-out; logged as a warning at start).", default=False,
    )
    require_model_card: bool = _env(
        "REQUIRE_MODEL_CARD", "Packaging refuses a model without a model card text (package --card card.md).",
        default=False,
    )
    log_level: str = _env("LOG_LEVEL", "Application log level: " + ", ".join(LOG_LEVELS) + " (any case).", default="info")
    max_request_bytes: int = _env(
        "MAX_REQUEST_BYTES", "Largest accepted request body in bytes (413 above).", default=16 * 1024 * 1024
    )
    max_batch_rows: int = _env("MAX_BATCH_ROWS", "Most rows accepted in one predict request.", default=10_000)
    rate_limit_requests: float = _env(
        "RATE_LIMIT_REQUESTS", "Requests per second each API key (or, without keys, each client address) may make "
        "to predict, explain and monitoring, shared by all workers; 0 = off (429 with Retry-After above).", default=0.0,
    )
    rate_limit_requests_burst: int = _env(
        "RATE_LIMIT_REQUESTS_BURST", "Requests a caller may make at once above RATE_LIMIT_REQUESTS.", default=10
    )
    rate_limit_rows: float = _env(
        "RATE_LIMIT_ROWS", "Rows per second each API key (or client address) may send to be predicted; 0 = off.",
        default=0.0,
    )
    rate_limit_rows_burst: int = _env(
        "RATE_LIMIT_ROWS_BURST", "Rows a caller may send at once above RATE_LIMIT_ROWS; 0 = MAX_BATCH_ROWS "
        "(never less, or a full batch could never pass).", default=0,
    )
    explain_max_seconds: float = _env(
        "EXPLAIN_MAX_SECONDS", "CPU seconds one explanation request may cost: each model version's row limit is this "
        "over its per-row cost, measured when the version loads (at least 1 row; 422 above); 0 = no such limit.",
        default=0.1,
    )
    explain_max_rows: int = _env(
        "EXPLAIN_MAX_ROWS", "Most rows one explanation request may hold whatever the model's cost; 0 = MAX_BATCH_ROWS.",
        default=0,
    )
    monitoring_cache_seconds: float = _env(
        "MONITORING_CACHE_SECONDS", "Seconds a worker reuses a monitoring report over more than MONITORING_WINDOW "
        "predictions (or by minutes) for the same model and window; parallel callers wait for one computation; "
        "0 = never.", default=10.0,
    )
    monitoring_large_reports: int = _env(
        "MONITORING_LARGE_REPORTS", "Such large monitoring reports computed at once across all workers; past it "
        "503 with Retry-After, so the other workers stay free; 0 = WEB_CONCURRENCY - 1 (at least 1).", default=0,
    )
    vectorized_min_rows: int = _env(
        "VECTORIZED_MIN_ROWS", "Batches with at least this many rows are validated column-wise with numpy.", default=4
    )
    database_url: str = _env(
        "DATABASE_URL", "Where requests, the prediction log, feedback and alerts live: sqlite:///path or postgresql://...",
        default="sqlite:///var/predictions.db",
    )
    audit_checkpoint_key_file: Path | None = _env(
        "AUDIT_CHECKPOINT_KEY_FILE", "Ed25519 private key that signs audit chain checkpoints, and nothing else "
        "(`audit checkpoint-keygen`; its public key beside it as .pub); unset = no checkpoints.", default=None,
    )
    audit_checkpoint_file: Path = _env(
        "AUDIT_CHECKPOINT_FILE", "Where signed checkpoints of the audit chain's head are appended: outside the "
        "database, best on another host or WORM storage.", default=Path("var/audit-checkpoints.jsonl"),
    )
    audit_checkpoint_seconds: float = _env(
        "AUDIT_CHECKPOINT_SECONDS", "Seconds between checkpoints by the elected worker (when the chain grew); "
        "0 = only after admin changes and by the CLI.", default=300.0,
    )
    backup_signing_key_file: Path | None = _env(
        "BACKUP_SIGNING_KEY_FILE", "Ed25519 private key `backup` signs its manifest with (any key pair, e.g. made by "
        "`keys signing-keygen`); unset = backups are not signed.", default=None,
    )
    backups_expected: bool = _env(
        "BACKUPS_EXPECTED", "This deployment takes backups on a schedule: /metrics says so, so that an alert "
        "(SklearnServerBackupNeverSucceeded) warns while none has ever finished.", default=False,
    )
    backup_trusted_keys: tuple[str, ...] = _env(
        "BACKUP_TRUSTED_KEYS", "Comma-separated Ed25519 public key files or folders `restore` accepts backup "
        "signatures from; when set, an unsigned backup is refused.", default=(),
    )
    routing_key_header: str = _env(
        "ROUTING_KEY_HEADER", "Request header whose value keeps a caller on one side of a canary split.",
        default="X-Routing-Key",
    )
    guard_seconds: float = _env(
        "GUARD_SECONDS", "How often each worker checks canaries against their rollback rules; 0 = never.", default=5.0
    )
    prediction_log_sample: float = _env(
        "PREDICTION_LOG_SAMPLE", "Share of predictions kept in the prediction log (0 to 1; by prediction id).", default=1.0
    )
    record_requests: bool = _env(
        "RECORD_REQUESTS", "Write one row per predict request (traffic, errors, latency for rollout and alerts).",
        default=True,
    )
    data_quality_checks: bool = _env(
        "DATA_QUALITY_CHECKS", "Count missing, out-of-range and unseen input values per batch (a Prometheus metric).",
        default=True,
    )
    record_queue_size: int = _env(
        "RECORD_QUEUE_SIZE", "Records a worker may hold for its background writer; past it they are dropped and "
        "counted, never waited on.", default=10_000,
    )
    record_queue_rows: int = _env(
        "RECORD_QUEUE_ROWS", "Rows of the records a worker may hold in memory for its background writer (bounds "
        "its memory under a burst of large batches); past it records are dropped and counted.", default=200_000,
    )
    spool_dir: Path | None = _env(
        "SPOOL_DIR", "Folder of the workers' on-disk spools, where answered records wait until the store takes them; "
        "unset = spool/ beside a SQLite DATABASE_URL's file, else var/spool.", default=None,
    )
    spool_max_mb: float = _env(
        "SPOOL_MAX_MB", "MiB of records each worker may spool while the store fails; past it they are dropped and "
        "counted (records_dropped_total{reason=\"spool_full\"}).", default=1024.0,
    )
    spool_fsync_seconds: float = _env(
        "SPOOL_FSYNC_SECONDS", "Longest time between two fsyncs of a worker's spool: what a machine crash can lose "
        "(a killed process loses nothing it spooled); 0 = fsync every batch.", default=1.0,
    )
    pii_hash_key: str | None = _env(
        "PII_HASH_KEY", "Secret for HMAC-hashing inputs flagged pii in the log; unset = such inputs are dropped.",
        default=None,
    )
    monitoring_window: int = _env(
        "MONITORING_WINDOW", "Predictions per version that drift, quality and alerts look at by default.", default=500
    )
    alert_rules_file: Path | None = _env(
        "ALERT_RULES_FILE", "TOML file of alert rules that extends or replaces the shipped defaults.", default=None
    )
    alert_webhook_url: str | None = _env(
        "ALERT_WEBHOOK_URL", "URL that receives alert notifications as JSON POSTs (retried with back-off).", default=None
    )
    alert_seconds: float = _env("ALERT_SECONDS", "How often alert rules are evaluated; 0 = never.", default=30.0)
    retention_days: float = _env(
        "RETENTION_DAYS", "Age after which `python -m service purge` deletes logged predictions.", default=30.0
    )
    retention_seconds: float = _env(
        "RETENTION_SECONDS", "How often one worker purges records older than RETENTION_DAYS by itself (RETENTION_DAYS "
        "0: no age limit); 0 = never.", default=3600.0,
    )
    prediction_log_max_rows: int = _env(
        "PREDICTION_LOG_MAX_ROWS", "Logged predictions kept at most: past it the oldest batches are deleted down to 90% "
        "(checked every minute by one worker; predictions never wait); 0 = no cap.", default=5_000_000,
    )
    poll_seconds: float = _env(
        "REGISTRY_POLL_SECONDS", "How often each worker re-reads the artifact root and registry.json; 0 = never.", default=2.0
    )
    model_backend: str = _env(
        "MODEL_BACKEND", "Prediction backend: auto (ONNX Runtime for versions whose export packaging measured "
        "within 1e-9 of scikit-learn, else scikit-learn), joblib (always scikit-learn) or onnx (whenever an export "
        "is stored).",
        default="auto",
    )
    model_backends: tuple[str, ...] = _env(
        "MODEL_BACKENDS", "Comma-separated model=backend overrides of MODEL_BACKEND, e.g. churn=joblib.", default=()
    )
    metrics_require_key: bool | None = _env(
        "METRICS_REQUIRE_KEY", "/metrics answers only callers with a read key (as /v1/models does); unset = whenever "
        "API_KEYS_FILE is set; 0 = open to anyone who reaches the port, on purpose.", default=None
    )
    metrics_feature_labels: bool = _env(
        "METRICS_FEATURE_LABELS", "Name features in /metrics labels (data-quality counts per feature); off = "
        "counted per model version only.", default=False,
    )
    default_model: str | None = _env(
        "DEFAULT_MODEL", "Model that /invocations (MLflow scoring, SageMaker) and Vertex AI's predict route serve; "
        "unset = the only model, if one.", default=None,
    )
    aip_health_route: str | None = _env(
        "AIP_HEALTH_ROUTE", "Set by Vertex AI: the path it probes for health, answered like /ping.", default=None,
    )
    aip_predict_route: str | None = _env(
        "AIP_PREDICT_ROUTE", "Set by Vertex AI: the path it sends predictions to, answered like "
        "/v1/models/<DEFAULT_MODEL>:predict.", default=None,
    )

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"PORT must be between 1 and 65535, got {self.port}")
        for name in ("aip_health_route", "aip_predict_route"):
            route = getattr(self, name)
            if route is not None and (not route.startswith("/") or any(c in route for c in "<>?# ")):
                raise ConfigError(f"{_var(name)} must be a path starting with / (no <, >, ?, # or spaces), got {route!r}")
        for name in ("workers", "threads", "timeout", "max_request_bytes", "max_batch_rows", "vectorized_min_rows",
                     "record_queue_size", "record_queue_rows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{_var(name)} must be at least 1, got {getattr(self, name)}")
        # NaN would make the poll thread spin and inf would crash it: both are refused
        if not (math.isfinite(self.poll_seconds) and self.poll_seconds >= 0):
            raise ConfigError(f"REGISTRY_POLL_SECONDS must be a finite number of 0 or more, got {self.poll_seconds}")
        if not (math.isfinite(self.guard_seconds) and 0 <= self.guard_seconds < 86400):
            raise ConfigError(f"GUARD_SECONDS must be between 0 and 86400, got {self.guard_seconds}")
        if not (math.isfinite(self.prediction_log_sample) and 0 <= self.prediction_log_sample <= 1):
            raise ConfigError(f"PREDICTION_LOG_SAMPLE must be between 0 and 1, got {self.prediction_log_sample}")
        if not (math.isfinite(self.request_read_timeout) and self.request_read_timeout > 0):
            raise ConfigError(f"REQUEST_READ_TIMEOUT must be a finite number above 0, got {self.request_read_timeout}")
        if self.monitoring_window < 10:
            raise ConfigError(f"MONITORING_WINDOW must be at least 10, got {self.monitoring_window}")
        for name in ("rate_limit_requests", "rate_limit_rows", "monitoring_cache_seconds",
                     "explain_max_seconds"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ConfigError(f"{_var(name)} must be a finite number of 0 or more, got {getattr(self, name)}")
        if self.explain_max_rows < 0:
            raise ConfigError(f"EXPLAIN_MAX_ROWS must be 0 (MAX_BATCH_ROWS) or more, got {self.explain_max_rows}")
        if self.monitoring_large_reports < 0:
            raise ConfigError(f"MONITORING_LARGE_REPORTS must be 0 or more, got {self.monitoring_large_reports}")
        if self.rate_limit_requests_burst < 1:
            raise ConfigError(f"RATE_LIMIT_REQUESTS_BURST must be at least 1, got {self.rate_limit_requests_burst}")
        if self.rate_limit_rows_burst and self.rate_limit_rows_burst < self.max_batch_rows:
            raise ConfigError(f"RATE_LIMIT_ROWS_BURST must be 0 or at least MAX_BATCH_ROWS ({self.max_batch_rows}), "
                              f"got {self.rate_limit_rows_burst}")
        if self.worker_max_requests < 0:
            raise ConfigError(f"WORKER_MAX_REQUESTS must be 0 (never) or more, got {self.worker_max_requests}")
        if not (math.isfinite(self.spool_max_mb) and self.spool_max_mb > 0):
            raise ConfigError(f"SPOOL_MAX_MB must be a finite number above 0, got {self.spool_max_mb}")
        for name in ("alert_seconds", "retention_days", "worker_memory_growth_mb", "retention_seconds",
                     "spool_fsync_seconds", "audit_checkpoint_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{_var(name)} must be a finite number of 0 or more, got {value}")
        if self.prediction_log_max_rows < 0:
            raise ConfigError(f"PREDICTION_LOG_MAX_ROWS must be 0 (no cap) or more, got {self.prediction_log_max_rows}")
        if self.alert_webhook_url and not self.alert_webhook_url.startswith(("http://", "https://")):
            raise ConfigError("ALERT_WEBHOOK_URL must start with http:// or https://")
        if not self.database_url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            scheme = self.database_url.partition(":")[0]  # never the rest: it may hold a password
            raise ConfigError(f"DATABASE_URL must start with sqlite:///, postgresql:// or postgres://, got {scheme!r}...")
        object.__setattr__(self, "log_level", self.log_level.lower())  # frozen: normalise once, here
        for value in self.forwarded_allow_ips:
            if value != "*":
                try:
                    ipaddress.ip_network(value, strict=False)
                except ValueError:
                    raise ConfigError(f"FORWARDED_ALLOW_IPS: {value!r} is not an IP address or network") from None
        object.__setattr__(self, "allowed_hosts", tuple(h.lower() for h in self.allowed_hosts))
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")

    def spool_folder(self) -> Path:
        """Where this server's workers spool: one subfolder per database, so two servers that share a
        spool root but not a store never ship each other's records to the wrong one."""
        if self.spool_dir is not None:
            root = self.spool_dir
        elif self.database_url.startswith("sqlite:///"):
            root = Path(self.database_url[len("sqlite:///"):]).parent / "spool"
        else:
            root = Path("var/spool")
        digest = hashlib.sha256(self.database_url.encode()).hexdigest()[:16]
        return root / digest

    @property
    def metrics_key_required(self) -> bool:
        """Tell whether /metrics needs a read key: as asked, else whenever API keys are configured.

        It lists model names, versions and hashes: once a server has keys, that is not for anyone.
        """
        return self.api_keys_file is not None if self.metrics_require_key is None else self.metrics_require_key

    @property
    def is_loopback(self) -> bool:
        """Tell whether the bind address only accepts connections from this machine."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def is_wildcard(self) -> bool:
        """Tell whether the bind address is every interface (``0.0.0.0`` or ``::``)."""
        try:
            return ipaddress.ip_address(self.host).is_unspecified
        except ValueError:
            return False

    @property
    def served_hosts(self) -> tuple[str, ...]:
        """Return the Host names this server answers to (``("*",)`` = any), lower case, without port."""
        if self.allowed_hosts:
            return self.allowed_hosts
        if self.is_wildcard:
            # Bound everywhere, the server needs keys (or the explicit opt-in) and cannot know its names.
            return ("*",)
        return tuple(dict.fromkeys(("localhost", "127.0.0.1", "::1", self.host.lower())))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Build the config from environment variables, naming any bad one in the error."""
        environ = with_platform_defaults(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is None:
                continue
            try:
                values[f.name] = PARSERS[f.type](raw.strip())
            except ValueError as exc:
                raise ConfigError(f"{f.metadata['env']}={raw!r} is invalid: {exc}") from None
        return cls(**values)

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """List (variable, default as the settings reference shows it, meaning) for every setting."""
        return [(f.metadata["env"], shown_default(f.default), f.metadata["help"]) for f in fields(cls)]


def _var(field_name: str) -> str:
    return next(f.metadata["env"] for f in fields(Config) if f.name == field_name)
