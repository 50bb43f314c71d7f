"""One settings object for every modelog component (12-factor).

Values come from, in order of precedence: explicit keyword arguments (CLI
flags end up here), ``MODELOG_*`` environment variables, then defaults.

==================================  ==========================================
Environment variable                Meaning
==================================  ==========================================
``MODELOG_BROKER``                  Kafka bootstrap servers, ``host:port[,...]``.
                                    Unset: the embedded broker started by
                                    ``modelog up``/``modelog broker`` (found via
                                    ``$MODELOG_DATA_DIR/broker.json``), else
                                    ``127.0.0.1:9092``.
``MODELOG_DATA_DIR``                Where DuckDB, artifacts and runtime files
                                    live (default ``./.modelog``).
``MODELOG_TOPIC_PREFIX``            Prefix of every topic (default ``modelog.``).
``MODELOG_PARTITIONS``              Partitions for new topics (default 4).
``MODELOG_REPLICATION``             Replication factor for new topics (default 1).
``MODELOG_SECURITY_PROTOCOL``       ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT``,
                                    ``SASL_SSL``.
``MODELOG_SASL_MECHANISM``          ``PLAIN``, ``SCRAM-SHA-256``, ...
``MODELOG_SASL_USERNAME``           SASL user.
``MODELOG_SASL_PASSWORD``           SASL password.
``MODELOG_SSL_CAFILE``              CA bundle for TLS.
``MODELOG_SSL_CERTFILE``            Client certificate for mutual TLS.
``MODELOG_SSL_KEYFILE``             Client key for mutual TLS.
``MODELOG_PRODUCER_NAME``           Identity recorded on every event produced
                                    (default ``<program>@<host>``).
``MODELOG_QUERY_URL``               URL of the projector's read-only query server
                                    (default: found in
                                    ``$MODELOG_DATA_DIR/projector.json``).
``MODELOG_QUERY_BIND``              ``host:port`` the projector's query server
                                    binds (default ``127.0.0.1:0``, a free port).
``MODELOG_ARTIFACT_URI``            Root of the artifact store: a directory, or a
                                    pyarrow / fsspec filesystem URI such as
                                    ``s3://bucket/modelog`` or ``gs://bucket/m``
                                    (default ``$MODELOG_DATA_DIR/artifacts``).
``MODELOG_WEBHOOK_ALLOW_PRIVATE``   ``1``: alert webhooks may reach loopback,
                                    private, link-local and other non-public
                                    addresses (default ``0``: public addresses
                                    only; cloud metadata endpoints never).
``MODELOG_SECRET_KEY``              Deployment key that encrypts webhook
                                    signing secrets in the log (any long random
                                    string); the same value for ``modelog alerts
                                    subscribe`` and ``modelog deliver``.
``MODELOG_ONLINE_ALLOW_PICKLE``     ``1``: workers also start online models
                                    registered as River pickles (flavor
                                    ``river``), running whatever code the
                                    artifact holds (default ``0``: only
                                    specifications, ``river-spec``, are built).
``MODELOG_QUERY_TOKEN``             Bearer token of the projector's query
                                    server: required when it binds beyond
                                    loopback, checked on every request when set;
                                    ``modelog query`` and the dashboard send it.
``MODELOG_DASHBOARD_TOKEN``         Token the dashboard asks for before showing
                                    any page: required when it serves beyond
                                    loopback, asked for when set.
``MODELOG_RESTORE_RETENTION``       Days of traffic (predictions, labels, alerts,
                                    stats) a fresh embedded broker is refilled
                                    with on start (default 7; ``0``: all).
==================================  ==========================================
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import json
import os
import socket
import sys
import typing
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from modelog.errors import ConfigurationError

__all__ = ["ENV_VARS", "Settings", "env_for", "is_loopback", "token_matches"]

_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
DEFAULT_BROKER = "127.0.0.1:9092"
BROKER_RUNTIME_FILE = "broker.json"


def _default_producer_name() -> str:
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    return f"{program}@{socket.gethostname()}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Configuration shared by the SDK, the workers, the projector and the dashboard.

    Examples
    --------
    >>> s = Settings(broker="kafka-1:9092,kafka-2:9092", topic_prefix="acme.")
    >>> s.bootstrap_servers
    'kafka-1:9092,kafka-2:9092'
    >>> s.kafka_config()["bootstrap.servers"]
    'kafka-1:9092,kafka-2:9092'
    """

    broker: str | None = None
    data_dir: Path = Path(".modelog")
    topic_prefix: str = "modelog."
    partitions: int = 4
    replication: int = 1
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = dataclasses.field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    producer_name: str = dataclasses.field(default_factory=_default_producer_name)
    query_url: str | None = None
    query_bind: str = "127.0.0.1:0"
    artifact_uri: str | None = None
    webhook_allow_private: bool = False
    secret_key: str | None = dataclasses.field(default=None, repr=False)
    online_allow_pickle: bool = False
    query_token: str | None = dataclasses.field(default=None, repr=False)
    dashboard_token: str | None = dataclasses.field(default=None, repr=False)
    restore_retention: float = 7.0

    def __post_init__(self) -> None:
        if self.security_protocol.upper() not in _SECURITY_PROTOCOLS:
            raise ConfigurationError(
                f"security_protocol={self.security_protocol!r} is not one of "
                f"{', '.join(_SECURITY_PROTOCOLS)}; set MODELOG_SECURITY_PROTOCOL accordingly."
            )
        if self.partitions < 1:
            raise ConfigurationError(
                f"partitions={self.partitions} must be at least 1 (MODELOG_PARTITIONS)."
            )
        if not self.restore_retention >= 0:
            raise ConfigurationError(
                f"restore_retention={self.restore_retention} must be a number of days >= 0 "
                "(MODELOG_RESTORE_RETENTION; 0 refills everything)."
            )
        if self.replication < 1:
            raise ConfigurationError(
                f"replication={self.replication} must be at least 1 (MODELOG_REPLICATION)."
            )
        if not self.topic_prefix or any(c in self.topic_prefix for c in " /\\:"):
            raise ConfigurationError(
                f"topic_prefix={self.topic_prefix!r} must be non-empty and may only use "
                "letters, digits, '.', '_' and '-' (MODELOG_TOPIC_PREFIX)."
            )

    # -- construction ---------------------------------------------------
    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``MODELOG_*`` variables, then apply non-``None`` overrides."""
        e = os.environ if env is None else env
        values: dict[str, Any] = {}
        for attr, var in ENV_VARS.items():
            raw = e.get(var)
            if raw is None or raw == "":
                continue
            try:
                values[attr] = _PARSERS[attr](raw)
            except ValueError as exc:
                raise ConfigurationError(f"{var}={raw!r} is invalid: {exc}") from exc
        for key, value in overrides.items():
            if value is not None:
                values[key] = Path(value) if key == "data_dir" else value
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    # -- derived values -------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        """The broker to use: explicit, else the embedded one on record, else the default."""
        if self.broker:
            return self.broker
        runtime = self.data_dir / BROKER_RUNTIME_FILE
        try:
            info = json.loads(runtime.read_text())
            return str(info["bootstrap_servers"])
        except (OSError, ValueError, KeyError):
            return DEFAULT_BROKER

    @property
    def duckdb_path(self) -> Path:
        """The DuckDB file the projector writes."""
        return self.data_dir / "modelog.duckdb"

    def kafka_config(self) -> dict[str, Any]:
        """librdkafka (confluent-kafka) client settings: servers plus security pass-through."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol.upper(),
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password
        if self.ssl_cafile:
            conf["ssl.ca.location"] = self.ssl_cafile
        if self.ssl_certfile:
            conf["ssl.certificate.location"] = self.ssl_certfile
        if self.ssl_keyfile:
            conf["ssl.key.location"] = self.ssl_keyfile
        return conf

    def aiokafka_config(self) -> dict[str, Any]:
        """aiokafka/Faust-style settings for the same security configuration."""
        conf: dict[str, Any] = {"security_protocol": self.security_protocol.upper()}
        if self.sasl_mechanism:
            conf["sasl_mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            conf["sasl_plain_username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl_plain_password"] = self.sasl_password
        return conf


ENV_VARS: dict[str, str] = {
    field.name: f"MODELOG_{field.name.upper()}" for field in dataclasses.fields(Settings)
}
"""The environment variable of every :class:`Settings` field: ``MODELOG_<FIELD>``.

Examples
--------
>>> ENV_VARS["broker"], ENV_VARS["artifact_uri"]
('MODELOG_BROKER', 'MODELOG_ARTIFACT_URI')
"""


def _boolean(raw: str) -> bool:
    """A flag's value: ``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``."""
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("use 1 or 0 (true/false, yes/no, on/off)")


def _parser(hint: Any) -> Callable[[str], Any]:
    """How to read a field of type ``hint`` (``X | None`` reads as ``X``) from a variable."""
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] or [hint]
    if kinds == [bool]:
        return _boolean
    if len(kinds) == 1 and kinds[0] in (str, int, float, Path):
        parse: Callable[[str], Any] = kinds[0]
        return parse
    raise TypeError(f"Settings field of type {hint!r}: teach modelog.config._parser to read it")


_PARSERS: dict[str, Callable[[str], Any]] = {
    name: _parser(hint) for name, hint in typing.get_type_hints(Settings).items()
}


def env_for(settings: Settings, *, exclude: Collection[str] = ()) -> dict[str, str]:
    """The ``MODELOG_*`` variables that make ``Settings.from_env()`` rebuild ``settings``.

    A child process given them (on top of the parent's environment) sees the
    same settings, flags included. The data directory is made absolute (the
    child may run elsewhere); unset optional values are left out, and so are the
    fields named in ``exclude`` (the child then takes them from the inherited
    environment or its own default).

    Examples
    --------
    >>> s = Settings(data_dir=Path("/d"), broker="k:9092", partitions=2,
    ...              artifact_uri="memory://x")
    >>> Settings.from_env(env_for(s)) == s
    True
    >>> env = env_for(s, exclude={"producer_name"})
    >>> env["MODELOG_DATA_DIR"], env["MODELOG_ARTIFACT_URI"], "MODELOG_PRODUCER_NAME" in env
    ('/d', 'memory://x', False)
    """
    env: dict[str, str] = {}
    for attr, var in ENV_VARS.items():
        value = getattr(settings, attr)
        if value is None or attr in exclude:
            continue
        if attr == "data_dir":
            value = Path(value).resolve()
        env[var] = str(value)
    return env


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, ``[v6]`` or ``localhost``) only reaches this machine.

    A service bound beyond loopback needs its token (``MODELOG_QUERY_TOKEN``,
    ``MODELOG_DASHBOARD_TOKEN``).

    Examples
    --------
    >>> [is_loopback(h) for h in ("127.0.0.1", "localhost", "[::1]", "0.0.0.0", "projector")]
    [True, True, True, False, False]
    """
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_matches(given: str | None, expected: str) -> bool:
    """Whether ``given`` is the token ``expected``, compared in constant time.

    Examples
    --------
    >>> token_matches("s3cret", "s3cret"), token_matches("guess", "s3cret")
    (True, False)
    >>> token_matches(None, "s3cret")
    False
    """
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
