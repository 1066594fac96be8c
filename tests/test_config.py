from pathlib import Path

import pytest

from service.config import Config
from service.errors import ConfigError


def test_defaults_without_any_variable():
    config = Config.from_env({})
    assert config == Config()
    assert config.host == "127.0.0.1"
    assert config.port == 8000
    assert config.workers == 2
    assert config.threads == 1
    assert config.timeout == 60
    assert config.artifacts_dir == Path("artifacts")
    assert config.api_keys_file is None
    assert config.allow_unauthenticated is False
    assert config.signing_key is None
    assert config.log_level == "info"
    assert config.max_request_bytes == 16 * 1024 * 1024
    assert config.max_batch_rows == 10_000
    assert config.vectorized_min_rows == 4
    assert config.poll_seconds == 2.0
    assert config.local_admin_keys_file == Path("var/local-admin-keys.json")
    assert config.forwarded_allow_ips == ()
    assert config.allowed_hosts == ()


def test_every_variable_is_parsed():
    config = Config.from_env({
        "HOST": "0.0.0.0",
        "PORT": " 9000 ",
        "WEB_CONCURRENCY": "4",
        "THREADS": "8",
        "WORKER_TIMEOUT": "30",
        "ARTIFACTS_DIR": "/srv/models",
        "API_KEYS_FILE": "/etc/keys.json",
        "ALLOW_UNAUTHENTICATED": "yes",
        "MODEL_SIGNING_KEY": "s3cret",
        "LOG_LEVEL": "debug",
        "MAX_REQUEST_BYTES": "1024",
        "MAX_BATCH_ROWS": "50",
        "VECTORIZED_MIN_ROWS": "7",
        "REGISTRY_POLL_SECONDS": "0.5",
        "UNRELATED": "ignored",
    })
    assert config == Config(
        host="0.0.0.0", port=9000, workers=4, threads=8, timeout=30, artifacts_dir=Path("/srv/models"),
        api_keys_file=Path("/etc/keys.json"), allow_unauthenticated=True, signing_key="s3cret", log_level="debug",
        max_request_bytes=1024, max_batch_rows=50, vectorized_min_rows=7, poll_seconds=0.5,
    )
    assert isinstance(config.port, int) and isinstance(config.poll_seconds, float)


def test_every_declared_variable_is_covered_by_describe():
    variables = [name for name, _default, _help in Config.describe()]
    assert len(set(variables)) == len(variables)
    assert {
        "HOST", "PORT", "WEB_CONCURRENCY", "THREADS", "WORKER_TIMEOUT", "ARTIFACTS_DIR", "API_KEYS_FILE",
        "ALLOW_UNAUTHENTICATED", "LOCAL_ADMIN_KEYS_FILE", "FORWARDED_ALLOW_IPS", "ALLOWED_HOSTS",
        "MODEL_SIGNING_KEY", "LOG_LEVEL", "MAX_REQUEST_BYTES", "MAX_BATCH_ROWS",
        "VECTORIZED_MIN_ROWS", "DATABASE_URL", "ROUTING_KEY_HEADER", "GUARD_SECONDS", "PREDICTION_LOG_SAMPLE",
        "PII_HASH_KEY", "MONITORING_WINDOW", "ALERT_RULES_FILE", "ALERT_WEBHOOK_URL", "ALERT_SECONDS", "RETENTION_DAYS",
        "REGISTRY_POLL_SECONDS",
    } <= set(variables)
    assert variables.index("API_KEYS_FILE") < variables.index("LOCAL_ADMIN_KEYS_FILE")  # the trust settings together
    assert all(help_text for _name, _default, help_text in Config.describe())


@pytest.mark.parametrize("word, expected", [("1", True), ("true", True), ("YES", True), ("on", True),
                                            ("0", False), ("false", False), ("No", False), ("off", False), ("", False)])
def test_boolean_words(word, expected):
    assert Config.from_env({"ALLOW_UNAUTHENTICATED": word}).allow_unauthenticated is expected


def test_empty_optional_paths_and_keys_mean_unset():
    config = Config.from_env({"API_KEYS_FILE": "", "MODEL_SIGNING_KEY": "  "})
    assert config.api_keys_file is None
    assert config.signing_key is None


@pytest.mark.parametrize("variable, value, fragment", [
    ("PORT", "http", "PORT='http' is invalid: expected a whole number"),
    ("PORT", "80.5", "PORT='80.5' is invalid"),
    ("PORT", "", "PORT='' is invalid"),
    ("PORT", "0", "PORT must be between 1 and 65535, got 0"),
    ("PORT", "65536", "PORT must be between 1 and 65535, got 65536"),
    ("WEB_CONCURRENCY", "0", "WEB_CONCURRENCY must be at least 1, got 0"),
    ("WEB_CONCURRENCY", "two", "WEB_CONCURRENCY='two' is invalid"),
    ("THREADS", "-1", "THREADS must be at least 1, got -1"),
    ("WORKER_TIMEOUT", "0", "WORKER_TIMEOUT must be at least 1"),
    ("ALLOW_UNAUTHENTICATED", "maybe", "ALLOW_UNAUTHENTICATED='maybe' is invalid: expected one of"),
    ("LOG_LEVEL", "verbose", "LOG_LEVEL must be one of debug, info, warning, error, critical, got 'verbose'"),
    ("MAX_REQUEST_BYTES", "0", "MAX_REQUEST_BYTES must be at least 1"),
    ("MAX_REQUEST_BYTES", "1MB", "MAX_REQUEST_BYTES='1MB' is invalid"),
    ("MAX_BATCH_ROWS", "0", "MAX_BATCH_ROWS must be at least 1"),
    ("VECTORIZED_MIN_ROWS", "0", "VECTORIZED_MIN_ROWS must be at least 1"),
    ("REGISTRY_POLL_SECONDS", "soon", "REGISTRY_POLL_SECONDS='soon' is invalid"),
    ("REGISTRY_POLL_SECONDS", "-1", "REGISTRY_POLL_SECONDS must be a finite number of 0 or more, got -1.0"),
    ("REGISTRY_POLL_SECONDS", "nan", "REGISTRY_POLL_SECONDS must be a finite number"),
    ("REGISTRY_POLL_SECONDS", "inf", "REGISTRY_POLL_SECONDS must be a finite number"),
])
def test_bad_values_raise_config_error_naming_the_variable(variable, value, fragment):
    with pytest.raises(ConfigError) as excinfo:
        Config.from_env({variable: value})
    assert fragment in str(excinfo.value)
    assert str(excinfo.value).startswith(variable)


def test_config_is_frozen():
    config = Config()
    with pytest.raises(AttributeError):
        config.port = 1  # type: ignore[misc]


@pytest.mark.parametrize("host, expected", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("example.com", False),
])
def test_is_loopback(host, expected):
    assert Config(host=host).is_loopback is expected


def test_log_level_is_case_insensitive():
    assert Config.from_env({"LOG_LEVEL": "WARNING"}).log_level == "warning"


def test_proxy_and_host_lists_are_comma_separated():
    config = Config.from_env({"FORWARDED_ALLOW_IPS": " 10.0.0.0/8, 127.0.0.1 ,,::1", "ALLOWED_HOSTS": "Models.Example.COM,",
                              "LOCAL_ADMIN_KEYS_FILE": "/run/keys.json"})
    assert config.forwarded_allow_ips == ("10.0.0.0/8", "127.0.0.1", "::1")
    assert config.allowed_hosts == ("models.example.com",)
    assert config.local_admin_keys_file == Path("/run/keys.json")
    assert Config.from_env({"FORWARDED_ALLOW_IPS": "*"}).forwarded_allow_ips == ("*",)
    assert Config.from_env({"FORWARDED_ALLOW_IPS": ""}).forwarded_allow_ips == ()


def test_a_proxy_that_is_not_an_address_is_named():
    with pytest.raises(ConfigError, match="FORWARDED_ALLOW_IPS: 'proxy.local' is not an IP address or network"):
        Config.from_env({"FORWARDED_ALLOW_IPS": "proxy.local"})


@pytest.mark.parametrize("host, allowed, served", [
    ("127.0.0.1", (), ("localhost", "127.0.0.1", "::1")),
    ("::1", (), ("localhost", "127.0.0.1", "::1")),
    ("10.1.2.3", (), ("localhost", "127.0.0.1", "::1", "10.1.2.3")),
    ("0.0.0.0", (), ("*",)),
    ("::", (), ("*",)),
    ("0.0.0.0", ("models.example.com",), ("models.example.com",)),
])
def test_served_hosts_default_to_loopback_names_and_the_bind_address(host, allowed, served):
    assert Config(host=host, allowed_hosts=allowed).served_hosts == served
