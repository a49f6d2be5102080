"""Bad setups get one clear line, never a traceback, and never a secret in the output.

Run through the console script's ``main()`` in-process: the exit code and stderr are what an
admin sees.
"""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from pirus_bridge.cli import main
from pirus_bridge.config import load_config
from pirus_bridge.exceptions import ConfigError
from tests.redis_server import free_port
from tests.test_cli import EPRINTS, write_config

REDIS_PASS = "redis-pass-456"
TRACKER_PASS = "tracker-pass-123"


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["pirus-bridge", *args])
    code: Any = 0
    try:
        main()
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return int(code or 0), out.out, out.err


def check(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
          config: Path) -> str:
    code, out, err = run(monkeypatch, capsys, "--config", str(config), "config", "check")
    assert code == 1, (out, err)
    assert "Traceback" not in err
    return err


def raw_config(tmp_path: Path, text: str, name: str = "pirus-bridge.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def base_yaml(**repository: str) -> str:
    repo = {"host": "eprints.example.ac.uk", "base_url": "https://eprints.example.ac.uk",
            "mapping": str(EPRINTS), **repository}
    return yaml.safe_dump({"repository": repo})


@pytest.mark.parametrize("url", [
    f"redis://:{REDIS_PASS}@127.0.0.1:abc/0",
    f"redis://:{REDIS_PASS}@127.0.0.1:99999/0",
])
def test_config_check_catches_a_redis_port_that_is_no_number(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = check(monkeypatch, capsys, write_config(tmp_path, url))
    assert "redis.url: has no valid port number" in err
    assert REDIS_PASS not in err


@pytest.mark.parametrize("where", ["config", "env"])
def test_a_wrong_scheme_never_echoes_the_password(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://admin:{REDIS_PASS}@redis.example.org:6379/0"
    if where == "env":
        monkeypatch.setenv("PIRUS_BRIDGE_REDIS_URL", url)
        config = write_config(tmp_path, None)
    else:
        config = write_config(tmp_path, url)
    err = check(monkeypatch, capsys, config)
    name = "PIRUS_BRIDGE_REDIS_URL" if where == "env" else "redis.url"
    assert f"{name}: must start with redis://" in err
    assert "admin:***@redis.example.org" in err
    assert REDIS_PASS not in err


def test_gatherer_url_credentials_are_hidden_in_config_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, None, gatherers={
        "tracker": {"url": f"ftp://stats:{TRACKER_PASS}@tracker.example.org/counter/"},
        "other": {"url": f"https://stats:{TRACKER_PASS}@tracker.example.org:port/"},
    })
    err = check(monkeypatch, capsys, config)
    assert "gatherers.tracker.url: must be an http:// or https:// URL" in err
    assert "gatherers.other.url: has no valid port number" in err
    assert TRACKER_PASS not in err


def test_config_check_names_a_latin1_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "pirus-bridge.yaml"
    config.write_bytes(base_yaml().encode() + "# Universit\u00e9\n".encode("latin-1"))
    err = check(monkeypatch, capsys, config)
    assert f"{config}:5: not UTF-8 text (byte 0xe9); save the file as UTF-8" in err


def test_config_check_names_a_latin1_mapping_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_bytes(EPRINTS.read_bytes() + "# Universit\u00e9\n".encode("latin-1"))
    err = check(monkeypatch, capsys, raw_config(tmp_path, base_yaml(mapping=str(mapping))))
    assert str(mapping) in err and "utf-8" in err.lower()


def test_duplicate_keys_are_errors_with_both_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    text = base_yaml() + "counting:\n  salt: one\n  double_click_s: 30\n  salt: two\n"
    err = check(monkeypatch, capsys, raw_config(tmp_path, text))
    assert ":8: YAML syntax error:" in err and "duplicate key 'salt' (first on line 6)" in err


def _bomb(levels: int = 9) -> str:
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(levels):
        prev, name = chr(97 + i), chr(98 + i)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    bomb = "x-bomb:\n" + "".join(f"  {line}\n" for line in _bomb().splitlines())
    config = raw_config(tmp_path, bomb + base_yaml() + "bots:\n  user_agents: *j\n")
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match="alias bomb"):
            load_config(config)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024


def test_an_alias_bomb_in_a_mapping_is_refused(tmp_path: Path) -> None:
    from pirus_bridge.exceptions import MappingError
    from pirus_bridge.mapping import Mapping

    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(EPRINTS.read_text() + "x-bomb:\n" + "".join(
        f"  {line}\n" for line in _bomb().splitlines()))
    with pytest.raises(MappingError, match="alias bomb"):
        Mapping.load(mapping, host="eprints.example.ac.uk", base_url="https://e.example")


def test_many_aliases_are_refused(tmp_path: Path) -> None:
    text = base_yaml() + "x: &x 1\ny: [" + ", ".join(["*x"] * 101) + "]\n"
    with pytest.raises(ConfigError, match="more than 100 aliases"):
        load_config(raw_config(tmp_path, text))


@pytest.mark.parametrize(("host", "bare"), [
    ("https://eprints.example.ac.uk/", "eprints.example.ac.uk"),
    ("http://eprints.example.ac.uk:8080/cgi", "eprints.example.ac.uk"),
    ("eprints.example.ac.uk/", "eprints.example.ac.uk"),
])
def test_repository_host_that_is_a_url_suggests_the_bare_host(
    host: str, bare: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = check(monkeypatch, capsys, raw_config(tmp_path, base_yaml(host=host)))
    assert "repository.host: must be a host name, not a URL" in err
    assert f"(did you mean '{bare}'?)" in err


@pytest.mark.parametrize("host", ["eprints.example.ac.uk", "localhost", "repo-1.example.org"])
def test_repository_host_accepts_host_names(host: str, tmp_path: Path) -> None:
    assert load_config(raw_config(tmp_path, base_yaml(host=host))).repository.host == host


def test_repository_host_rejects_what_is_no_host(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="repository.host: must be a host name"):
        load_config(raw_config(tmp_path, base_yaml(host="my repository")))


def test_entity_bundle_with_a_bad_key_is_one_line(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, redis_url)
    code, _, err = run(monkeypatch, capsys, "--config", str(config), "entity", "bundle", "X",
                       "notakey")
    assert code == 1
    assert err.startswith("error: not an entity key: 'notakey'") and err.count("\n") == 1


def test_stats_item_of_an_unknown_id_exits_1(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, redis_url)
    for extra in ([], ["--json"]):
        code, out, err = run(monkeypatch, capsys, "--config", str(config), "stats", "item",
                             "no-such-item", *extra)
        assert code == 1 and out == ""
        assert "error: no usage counted for item 'no-such-item'" in err


@pytest.mark.parametrize("command", [
    ["push", "--once"], ["outbox", "stats"], ["outbox", "list"], ["failed", "list"],
    ["reconcile", "--month", "2026-10"], ["stats", "item", "1234"],
])
def test_redis_unreachable_never_exits_0_even_without_gatherers(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"redis://:{REDIS_PASS}@127.0.0.1:{free_port()}/0"
    config = write_config(tmp_path, url)  # no gatherers at all
    code, _, err = run(monkeypatch, capsys, "--config", str(config), *command)
    assert code == 1
    assert "cannot reach Redis at redis://:***@127.0.0.1" in err
    assert REDIS_PASS not in err and err.count("\n") == 1


def test_ingest_skips_blank_and_comment_lines_and_rejects_far_future_times(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    from pirus_bridge.chain import build
    from tests.helpers import clf, make_config

    good = [clf(f"14/Oct/2026:10:0{i}:00 +0000", "/1234/", ip=f"192.0.2.{i + 1}")
            for i in range(3)]
    future = clf("14/Oct/9999:10:00:00 +0000", "/1234/", ip="192.0.2.99")
    log = tmp_path / "access.log"
    log.write_text("#Software: a W3C header\n\n" + good[0] + "   \n" + good[1] + "# note\n"
                   + future + good[2].replace(" - - ", "  -  -  "))
    config = write_config(tmp_path, redis_url)
    code, out, err = run(monkeypatch, capsys, "--config", str(config), "ingest", "--json",
                         str(log))
    assert code == 0, err
    summary = json.loads(out)
    assert summary["lines"] == 4  # blank and comment lines are no log lines
    assert summary["unparsed"] == 1  # the year-9999 line
    assert summary["investigations"] == 3  # the doubled spaces parsed too
    client = redis.Redis.from_url(redis_url)
    try:  # the live path (queue workers) drops them too
        chain = build(make_config(redis_url), client).chain
        assert chain.line("") == (None, None) and chain.line("# comment") == (None, None)
    finally:
        client.close()
