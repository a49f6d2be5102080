"""The COUNTER API over TLS (COUNTER requires HTTPS), both documented ways: ``serve`` with a
certificate of its own (``http.tls_cert_file`` / ``tls_key_file``), and behind nginx with the
example server block that ``docs/deployment.md`` gives (``docs/service/nginx-counter-api.conf``),
run as a real nginx on a free port. Certificates are generated for the test by ``trustme``."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import trustme

from tests.helpers import ROOT, make_config, wait_until
from tests.r51_support import KEY, WORLD, Api, count_log, http_config
from tests.redis_server import free_port

EXAMPLE = ROOT / "docs" / "service" / "nginx-counter-api.conf"
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


@pytest.fixture
def certs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """``(ca.pem, cert.pem, key.pem)``: a test CA and a certificate for 127.0.0.1 it signed."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = (tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_pem.write_to_path(str(key_file))
    cert_file.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return ca_file, cert_file, key_file


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_serve_with_its_own_certificate(tmp_path: Path, r: redis.Redis, redis_url: str,
                                        serve_api: Any, certs: tuple[Path, Path, Path]) -> None:
    ca, cert, key = certs
    count_log(tmp_path, r, redis_url)
    cfg = make_config(redis_url, gatherers=None, http={
        "listen": "127.0.0.1:0", "tls_cert_file": str(cert), "tls_key_file": str(key)})
    api: Api = serve_api(cfg, r)
    assert api.base.startswith("https://")
    answer = requests.get(f"{api.base}/reports/ir", verify=str(ca), timeout=10, params={
        "customer_id": WORLD, "api_key": KEY, "begin_date": "2026-10", "end_date": "2026-10"})
    assert answer.status_code == 200 and answer.json()["Report_Items"]
    with pytest.raises(requests.exceptions.SSLError):  # an unknown CA is refused
        requests.get(f"{api.base}/status", timeout=10)
    with pytest.raises(requests.exceptions.ConnectionError):  # and plain HTTP is not spoken
        requests.get(api.base.replace("https://", "http://") + "/status", timeout=10)


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (.ci/run installs it with "
                                          "apt-get when run as root): nginx test skipped")
def test_behind_nginx_with_the_documented_config(
    tmp_path: Path, r: redis.Redis, redis_url: str, serve_api: Any,
    certs: tuple[Path, Path, Path],
) -> None:
    ca, cert, key = certs
    count_log(tmp_path, r, redis_url)
    api: Api = serve_api(http_config(redis_url), r)  # plain HTTP on loopback, as documented
    port = free_port()
    log = tmp_path / "access.log"
    server = EXAMPLE.read_text()
    for old, new in (("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
                     ("/etc/ssl/certs/repository.example.ac.uk.pem", str(cert)),
                     ("/etc/ssl/private/repository.example.ac.uk.key", str(key)),
                     ("/var/log/nginx/counter-api.access.log", str(log)),
                     ("127.0.0.1:8710", f"127.0.0.1:{api.server.port}")):
        assert old in server, f"the example no longer has {old!r}"
        server = server.replace(old, new)
    (tmp_path / "counter-api.conf").write_text(server)
    temp = {name: tmp_path / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    (tmp_path / "nginx.conf").write_text(
        f"daemon off;\nworker_processes 1;\npid {tmp_path / 'nginx.pid'};\n"
        f"error_log {tmp_path / 'error.log'} warn;\nevents {{ worker_connections 64; }}\n"
        f"http {{\n  client_body_temp_path {temp['body']};\n  proxy_temp_path {temp['proxy']};\n"
        f"  fastcgi_temp_path {temp['fastcgi']};\n  uwsgi_temp_path {temp['uwsgi']};\n"
        f"  scgi_temp_path {temp['scgi']};\n  include {tmp_path / 'counter-api.conf'};\n}}\n")
    assert NGINX is not None
    proc = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
                             "-e", str(tmp_path / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: listening(port) or proc.poll() is not None, timeout=20)
        assert proc.poll() is None, (tmp_path / "error.log").read_text()
        base = f"https://127.0.0.1:{port}/r51"
        params = {"customer_id": WORLD, "api_key": KEY, "begin_date": "2026-09",
                  "end_date": "2026-10"}
        through = requests.get(f"{base}/reports/ir", params=params, verify=str(ca), timeout=10)
        direct = api.ir(begin_date="2026-09", end_date="2026-10")
        assert through.status_code == 200
        assert through.json() == direct.json()
        refused = requests.get(f"{base}/reports/ir", params={**params, "api_key": "wrong"},
                               verify=str(ca), timeout=10)
        assert (refused.status_code, refused.json()["Code"]) == (401, 2020)
        assert requests.get(f"{base}/status", verify=str(ca), timeout=10).json()[0][
            "Service_Active"] is True
    finally:
        proc.terminate()
        proc.wait(10)
    logged = log.read_text()
    assert "/r51/reports/ir" in logged and KEY not in logged and "api_key" not in logged


def test_deployment_doc_shows_the_tested_example() -> None:
    doc = (ROOT / "docs" / "deployment.md").read_text()
    for line in EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            code = line.split("#")[0].strip()
            assert code in doc, f"docs/deployment.md lacks {code!r} of {EXAMPLE.name}"
