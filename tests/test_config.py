"""Config validation: every problem at once, with its path, and helpful suggestions."""

from __future__ import annotations

from pathlib import Path

import pytest

from pirus_bridge.config import config_path, load_config, parse_config
from pirus_bridge.events import MetricType
from pirus_bridge.exceptions import ConfigError
from tests.helpers import ROOT

GOOD = {
    "repository": {
        "host": "eprints.example.ac.uk",
        "base_url": "https://eprints.example.ac.uk",
        "mapping": "mappings/eprints3.yaml",
    },
    "gatherers": {"irus": {"url": "https://irus.jisc.ac.uk/counter/test/"}},
}


def problems_of(data: object) -> dict[str, str]:
    with pytest.raises(ConfigError) as e:
        parse_config(data, base=ROOT)
    return {p.where: p.problem for p in e.value.problems}


def test_config_example_is_valid() -> None:
    cfg = load_config(ROOT / "config.example.yaml")
    assert cfg.redis.url is None  # the embedded default
    assert cfg.redis.data_dir == ROOT / "var"
    g = cfg.gatherers["tracker"]
    assert g.url == "https://tracker.example.org/counter/"  # not the retired IRUS endpoint
    assert g.metrics == (MetricType.REQUEST,)
    assert g.retry.max_attempts == 12
    assert "irus.jisc.ac.uk/counter" not in "".join(
        line.split("#")[0] for line in (ROOT / "config.example.yaml").read_text().splitlines())
    assert cfg.repository.mapping == ROOT / "mappings" / "eprints3.yaml"


def test_config_example_openaire_gatherer_is_valid_once_uncommented(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import yaml

    text = (ROOT / "config.example.yaml").read_text()
    block = text[text.index("  # openaire:"):]
    uncommented = text[: text.index("  # openaire:")] + "\n".join(
        line.replace("  # ", "  ", 1) if line.startswith("  # ") else line
        for line in block.splitlines())
    monkeypatch.setenv("OPENAIRE_TOKEN", "0123456789abcdef0123456789abcdef")
    cfg = parse_config(yaml.safe_load(uncommented), base=ROOT)
    g = cfg.gatherers["openaire"]
    assert (g.profile, g.url, g.site_id, g.batch_size) == (
        "matomo", "https://analytics.openaire.eu/piwik.php", "123", 100)
    assert g.token == "0123456789abcdef0123456789abcdef"


def test_config_gatherer_transport_and_form_settings(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    g = parse_config({**GOOD, "gatherers": {"t": {
        "url": "https://t.example/counter/", "proxy": "http://u:p@proxy.example:3128",
        "tls": {"ca_file": str(ca)}, "deadline_s": 45, "req_id_form": "urn",
        "send_empty_rfr_dat": False, "anonymize_ip": 1}}}, base=ROOT).gatherers["t"]
    assert (g.proxy, g.tls.ca_file, g.deadline_s, g.req_id_form, g.send_empty_rfr_dat,
            g.anonymize_ip) == ("http://u:p@proxy.example:3128", ca, 45.0, "urn", False, 1)
    default = parse_config(GOOD, base=ROOT).gatherers["irus"]
    assert (default.proxy, default.tls.ca_file, default.deadline_s, default.req_id_form,
            default.send_empty_rfr_dat, default.anonymize_ip, default.batch_size) == (
        None, None, 30.0, None, True, 0, 100)


def test_config_gatherer_transport_problems() -> None:
    found = problems_of({**GOOD, "outbox": {"lease_s": 20}, "gatherers": {"t": {
        "url": "https://t.example/counter/", "proxy": "https://u:secret@proxy:3128",
        "tls": {"ca_file": "/nonexistent/ca.pem", "verify": False}, "deadline_s": 20,
        "req_id_form": "urn:ip", "anonymize_ip": 4,
        "circuit": {"failure_ratio": 1.5, "window": 1}}}})
    assert "http:// proxy URL" in found["gatherers.t.proxy"]
    assert "secret" not in found["gatherers.t.proxy"]  # credentials never shown
    assert "no such file" in found["gatherers.t.tls.ca_file"]
    assert found["gatherers.t.tls.verify"].startswith("unknown key")  # no way to turn it off
    assert "shorter than outbox.lease_s (20)" in found["gatherers.t.deadline_s"]
    assert "bare, urn" in found["gatherers.t.req_id_form"]
    assert "between 0 and 3" in found["gatherers.t.anonymize_ip"]
    assert "between 0.01 and 1" in found["gatherers.t.circuit.failure_ratio"]
    assert "at least 2" in found["gatherers.t.circuit.window"] or \
        "between 2" in found["gatherers.t.circuit.window"]


def test_config_defaults() -> None:
    cfg = parse_config(GOOD, base=ROOT)
    assert cfg.log.format == "combined"
    assert cfg.counting.double_click_s == 30
    assert cfg.gatherers["irus"].profile == "irus"
    assert cfg.gatherers["irus"].method == "GET"


def test_config_lists_every_problem_with_its_path() -> None:
    data = {
        "repository": {"host": "x", "base_url": "ftp://x", "mapping": "mappings/nope.yaml"},
        "log": {"formt": "combined"},
        "bots": {"ips": ["300.1.1.1"], "user_agents": ["(unclosed"]},
        "gatherers": {
            "irus": {
                "url": "https://irus.example/counter/",
                "profile": "iris",
                "metrics": ["downloads"],
                "timeout": 5,
                "retry": {"max_attempts": 0},
            }
        },
    }
    found = problems_of(data)
    assert "http:// or https://" in found["repository.base_url"]
    assert "no such file" in found["repository.mapping"]
    assert found["log.formt"] == "unknown key (did you mean 'format'?)"
    assert "not an IP address" in found["bots.ips[0]"]
    assert "invalid regex" in found["bots.user_agents[0]"]
    assert "did you mean 'irus'" in found["gatherers.irus.profile"]
    assert "unknown metric" in found["gatherers.irus.metrics[0]"]
    assert found["gatherers.irus.timeout"].startswith("unknown key")
    assert "at least 1" in found["gatherers.irus.retry.max_attempts"]


def test_config_requires_repository() -> None:
    found = problems_of({})
    assert set(found) >= {"repository.host", "repository.base_url", "repository.mapping"}


def test_config_rejects_bad_log_format() -> None:
    found = problems_of({**GOOD, "log": {"format": "%h %Z %t"}})
    assert "%Z" in found["log.format"]


def test_config_rejects_bad_cron_and_field_template() -> None:
    gatherers = {
        "g": {"url": "http://127.0.0.1:9/", "cron": "every minute", "fields": {"req_id": "{ipp}"}}
    }
    found = problems_of({**GOOD, "gatherers": gatherers})
    assert "crontab" in found["gatherers.g.cron"]
    assert any(k.startswith("gatherers.g.fields") and "ipp" in v for k, v in found.items())


def test_config_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PIRUS_BRIDGE_REDIS_URL", "redis://:secret@127.0.0.1:6390/2")
    monkeypatch.setenv("PIRUS_BRIDGE_SALT", "pepper")
    cfg = parse_config(GOOD, base=ROOT)
    assert cfg.redis.url == "redis://:secret@127.0.0.1:6390/2"
    assert cfg.counting.salt == "pepper"
    monkeypatch.setenv("PIRUS_BRIDGE_CONFIG", str(tmp_path / "x.yaml"))
    assert config_path(None) == tmp_path / "x.yaml"
    assert config_path("given.yaml") == Path("given.yaml")


def test_config_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("repository:\n  host: x\n  base_url: [unclosed\n")
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    assert f"{bad}:" in str(e.value)
    assert "YAML syntax error" in str(e.value)


def test_config_is_loaded_safely(tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("repository: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="YAML syntax error"):
        load_config(evil)


def test_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("redis_section", "expected"),
    [
        ({"cluster": True}, "embedded Redis cannot be a cluster"),
        ({"cluster": True, "url": "unix:///run/redis.sock"}, "reached over TCP"),
        ({"cluster": True, "url": "redis://127.0.0.1:7000/2"}, "database 0 only"),
        ({"cluster": "yes", "url": "redis://127.0.0.1:7000/0"}, "must be true or false"),
    ],
)
def test_config_redis_cluster_needs_a_node_url(redis_section: dict, expected: str) -> None:
    problems = problems_of({**GOOD, "redis": redis_section})
    assert list(problems) == ["redis.cluster"]
    assert expected in problems["redis.cluster"]


def test_config_redis_cluster_names_any_node() -> None:
    cfg = parse_config({**GOOD, "redis": {"url": "redis://10.0.0.5:7001", "cluster": True}},
                       base=ROOT)
    assert cfg.redis.cluster and cfg.redis.url == "redis://10.0.0.5:7001"
    assert not parse_config(GOOD, base=ROOT).redis.cluster


def test_config_bad_url_with_cluster_is_one_problem() -> None:
    problems = problems_of({**GOOD, "redis": {"url": "http://x:1/", "cluster": True}})
    assert list(problems) == ["redis.url"]
