"""The shipped service files work as shipped: the systemd unit verifies and its command runs
``serve``; the supervisord config parses and each program is a valid command line."""

from __future__ import annotations

import configparser
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from pirus_bridge.config import load_config
from tests.helpers import ROOT, wait_until
from tests.redis_server import free_port

SERVICE = ROOT / "docs" / "service"
UNIT = SERVICE / "pirus-bridge@.service"
SUPERVISORD = SERVICE / "supervisord.conf"
CONFIG = SERVICE / "pirus-bridge.yaml"
SHIPPED_SCRIPT = "/opt/pirus-bridge/venv/bin/pirus-bridge"
SHIPPED_CONFIG = "/etc/pirus-bridge/pirus-bridge.yaml"
SCRIPT = str(Path(sys.executable).parent / "pirus-bridge")
INSTANCES = ["serve", "push", "worker-classifier", "worker-counter", "worker-logger"]


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (apt-get install systemd; .ci/run "
                           "does it when it runs as root): the unit is not verified")
@pytest.mark.parametrize("instance", INSTANCES)
def test_systemd_unit_verifies(instance: str, tmp_path: Path) -> None:
    shutil.copy(UNIT, tmp_path / UNIT.name)
    done = subprocess.run(["systemd-analyze", "verify", "--man=no",
                           str(tmp_path / f"pirus-bridge@{instance}.service")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "Unknown" not in done.stderr and "ignoring" not in done.stderr, done.stderr


def _exec_start(instance: str) -> list[str]:
    """ExecStart as systemd runs it for an instance, the shipped virtualenv replaced by ours."""
    line = unit()["Service"]["ExecStart"].replace("%I", instance)
    return [part.replace(SHIPPED_SCRIPT, SCRIPT) for part in shlex.split(line)]


@pytest.mark.parametrize("instance", INSTANCES)
def test_systemd_instance_names_become_commands(instance: str) -> None:
    cmd = _exec_start(instance)
    assert cmd[:2] == ["/bin/sh", "-c"]
    # the same shell line, asking the command for its help: the command and role exist
    done = subprocess.run([*cmd[:2], cmd[2] + " --help"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert f"Usage: pirus-bridge {instance.split('-')[0]} " in done.stdout


def test_systemd_unit_runs_serve_with_the_shipped_config(tmp_path: Path,
                                                         redis_url: str) -> None:
    """``pirus-bridge@serve`` as the unit starts it, with the shipped config (its paths moved
    into a temporary folder): it serves, answers /readyz, and stops cleanly on SIGTERM."""
    env_lines = [v for k, v in unit().items("Service") if k == "Environment"]
    assert f"PIRUS_BRIDGE_CONFIG={SHIPPED_CONFIG}" in env_lines
    data = yaml.safe_load(CONFIG.read_text())
    port = free_port()
    data["redis"] = {"url": redis_url}
    data["live"] = {"tail": [str(tmp_path / "access.log")],
                    "log_dir": str(tmp_path / "segregated")}
    data["http"]["listen"] = f"127.0.0.1:{port}"
    (tmp_path / "mappings").mkdir()
    shutil.copy(ROOT / "mappings" / "eprints3.yaml", tmp_path / "mappings")
    config = tmp_path / "pirus-bridge.yaml"
    config.write_text(yaml.safe_dump(data))
    (tmp_path / "access.log").write_text("")
    proc = subprocess.Popen(_exec_start("serve"), cwd=tmp_path, env={
        "PIRUS_BRIDGE_CONFIG": str(config), "PATH": "/usr/bin:/bin",
        "PIRUS_BRIDGE_SALT": "service-test"}, stderr=subprocess.PIPE, text=True)
    try:
        def ready() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2
                                    ).status_code == 200
            except requests.ConnectionError:
                return False

        assert wait_until(ready, timeout=30)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped cleanly" in err


def test_shipped_service_config_is_valid_where_it_is_installed(tmp_path: Path) -> None:
    (tmp_path / "mappings").mkdir()
    shutil.copy(ROOT / "mappings" / "eprints3.yaml", tmp_path / "mappings")
    shutil.copy(CONFIG, tmp_path / "pirus-bridge.yaml")
    cfg = load_config(tmp_path / "pirus-bridge.yaml")
    assert cfg.redis.url is None and str(cfg.redis.data_dir) == "/var/lib/pirus-bridge/redis"
    assert cfg.http.listen == "127.0.0.1:8710"


def test_supervisord_config_parses_and_its_programs_run(tmp_path: Path) -> None:
    import getpass

    from supervisor.options import ServerOptions

    shipped = SUPERVISORD.read_text()
    assert shipped.count("user=pirus\n") == 5
    # supervisord checks that the user and the log folder exist: parse it as this machine's own
    # user, with the log files in a temporary folder
    programs_conf = tmp_path / "pirus-bridge.conf"
    programs_conf.write_text(shipped.replace("user=pirus\n", f"user={getpass.getuser()}\n")
                             .replace("/var/log/pirus-bridge/", f"{tmp_path}/"))
    main = tmp_path / "supervisord.conf"
    main.write_text(f"[supervisord]\nlogfile={tmp_path}/supervisord.log\n"
                    f"pidfile={tmp_path}/supervisord.pid\n"
                    f"[include]\nfiles={programs_conf}\n")
    options = ServerOptions()
    options.realize(args=["-c", str(main)])
    groups = {g.name: g for g in options.process_group_configs}
    assert set(groups) == {"pirus-bridge"}
    programs = groups["pirus-bridge"].process_configs
    names = {p.name.rsplit("-", 1)[0] if p.name[-1].isdigit() else p.name for p in programs}
    assert names == {"pb-tail", "pb-classifier", "pb-counter", "pb-logger", "pb-push"}
    for program in programs:
        argv = shlex.split(program.command)
        assert argv[0] == SHIPPED_SCRIPT and argv[1:3] == ["--config", SHIPPED_CONFIG]
        done = subprocess.run([SCRIPT, *argv[3:], "--help"], capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0, (program.name, done.stderr)
        assert program.stopsignal == signal.SIGTERM
