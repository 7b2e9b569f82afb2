"""HTTPS on the controller's side, without a fleet: the lab's certificate authority and the certificates it signs
(checked by openssl, a client this repository did not write), the checks of an app's tls settings before any
host, and the deploy's probe and load client speaking TLS to a real TLS server with the name as SNI. On the lab:
tests/test_faults_lab.py (a swap under HTTPS load)."""

from __future__ import annotations

import http.server
import os
import shutil
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import FLASK_DIR, ROOT
from deploy_tool import appspec, tls
from deploy_tool.errors import DeployError
from deploy_tool.project import Project

sys.path.insert(0, str(ROOT / "module_utils"))
from deploykit_load import LoadRun, Target  # noqa: E402
from deploykit_probe import probe  # noqa: E402

VAULT = str(Path(sys.executable).parent / "ansible-vault")


@pytest.fixture
def app(tmp_path):
    """The Flask example's deploykit.yml in a folder of its own, whose tls settings a test changes."""
    folder = tmp_path / "app"
    shutil.copytree(FLASK_DIR, folder, ignore=shutil.ignore_patterns("__pycache__", "secrets.yml"))
    return folder


def with_tls(folder: Path, **settings: object) -> appspec.AppSpec:
    text = (folder / "deploykit.yml").read_text()
    text += "tls:\n" + "".join(f"  {name}: {value!r}\n" for name, value in settings.items())
    (folder / "deploykit.yml").write_text(text)
    return appspec.load(folder)


def test_the_lab_ca_signs_a_certificate_for_the_apps_names_that_openssl_verifies(tmp_path, app):
    project = Project(tmp_path)
    spec = with_tls(app, source="self-signed")
    chain, key, ca = tls.lab_certificate(project, spec)
    for name in ("demo.lab", "localhost"):
        verified = subprocess.run(["openssl", "verify", "-CAfile", str(ca), "-verify_hostname", name, str(chain)],
                                  capture_output=True, text=True)
        assert verified.returncode == 0 and ": OK" in verified.stdout, verified.stdout + verified.stderr
    assert subprocess.run(["openssl", "verify", "-CAfile", str(ca), "-verify_ip", "127.0.0.1", str(chain)],
                          capture_output=True).returncode == 0
    assert subprocess.run(["openssl", "verify", "-CAfile", str(ca), "-verify_hostname", "other.lab", str(chain)],
                          capture_output=True).returncode != 0
    assert oct(key.stat().st_mode & 0o777) == "0o600" and oct(key.parent.stat().st_mode & 0o777) == "0o700"
    assert oct((ca.parent / "ca-key.pem").stat().st_mode & 0o777) == "0o600"
    # kept while the names are the same; made again, by the same CA, when they change
    made = chain.stat().st_mtime_ns
    assert tls.lab_certificate(project, spec)[0].stat().st_mtime_ns == made
    (app / "deploykit.yml").write_text((app / "deploykit.yml").read_text().replace("names: [demo.lab,",
                                                                                    "names: [shop.lab,"))
    renamed = tls.lab_certificate(project, appspec.load(app))[0]
    assert renamed.stat().st_mtime_ns != made
    assert subprocess.run(["openssl", "verify", "-CAfile", str(ca), "-verify_hostname", "shop.lab", str(renamed)],
                          capture_output=True).returncode == 0


def vault_encrypt(path: Path, password: Path) -> None:
    subprocess.run([VAULT, "encrypt", "--vault-password-file", str(password), str(path)], check=True,
                   capture_output=True)


def test_a_key_given_as_files_is_kept_in_the_vault_and_must_be_the_certificates(tmp_path, app):
    project = Project(tmp_path / "state")
    lab = with_tls(app, source="self-signed")
    chain, key, _ = tls.lab_certificate(project, lab)
    other_chain, _, _ = tls.lab_certificate(Project(tmp_path / "other"), lab)  # another CA, another key
    password = tmp_path / "vault-pass"
    password.write_text("correct horse\n")
    shutil.copy(chain, app / "fullchain.pem")
    shutil.copy(key, app / "privkey.pem")
    (app / "deploykit.yml").write_text((app / "deploykit.yml").read_text().split("tls:\n")[0])
    spec = with_tls(app, source="files", certificate="fullchain.pem", key="privkey.pem")
    with pytest.raises(DeployError, match="is not encrypted: a private key is kept in the vault") as plain:
        tls.check(spec, password)
    assert "ansible-vault encrypt" in str(plain.value)
    vault_encrypt(app / "privkey.pem", password)
    with pytest.raises(DeployError, match="its vault password is needed"):
        tls.check(spec, None)
    tls.check(spec, password)  # decrypts in memory, and the key is the certificate's
    wrong = tmp_path / "wrong-pass"
    wrong.write_text("nope\n")
    with pytest.raises(DeployError, match="cannot be decrypted"):
        tls.check(spec, wrong)
    shutil.copy(other_chain, app / "fullchain.pem")
    with pytest.raises(DeployError, match="is not the private key of"):
        tls.check(spec, password)
    values = tls.extravars(project, spec)
    assert values["app_tls_key"] == str(app / "privkey.pem") and values["app_tls_source"] == "files"


@pytest.mark.parametrize("settings, said", [
    ({"source": "files"}, "tls.source files needs tls.certificate and tls.key"),
    ({"source": "host", "certificate": "live/fullchain.pem", "key": "/etc/k.pem"}, "must be an absolute path"),
    ({"source": "self-signed", "certificate": "x.pem"}, "are for tls.source files or host"),
    ({"source": "files", "certificate": "missing.pem", "key": "missing.key"}, "which is not a file"),
])
def test_tls_settings_that_cannot_work_are_refused_before_any_host(app, settings, said):
    with pytest.raises(DeployError, match=said):
        tls.check(with_tls(app, **settings))


@pytest.mark.parametrize("settings, said", [({"source": "letsencrypt"}, "tls.source must be one of"),
                                            ({"hsts_max_age": -1}, "tls.hsts_max_age must be 0-63072000")])
def test_the_tls_section_is_checked_with_the_file(app, settings, said):
    with pytest.raises(DeployError, match=said):
        with_tls(app, **settings)


@pytest.fixture
def tls_server(tmp_path, app):
    """A real HTTPS server with a lab certificate for demo.lab, that answers with the name the client sent as SNI."""
    chain, key, ca = tls.lab_certificate(Project(tmp_path / "state"), with_tls(app, source="self-signed"))
    seen: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key)
    context.sni_callback = lambda sock, name, ctx: seen.append(name)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802
            body = f"{self.headers['Host']} {seen[-1]}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], ca
    server.shutdown()


def test_the_probe_asks_over_tls_with_the_host_name_as_sni(tls_server):
    port, _ = tls_server
    status, body, _ = probe("https", "127.0.0.1", port, "/health", "demo.lab")
    assert (status, body) == (200, b"demo.lab demo.lab")


def test_the_load_client_speaks_tls_with_the_host_name_as_sni(tls_server):
    port, _ = tls_server
    target = Target.parse(f"https://127.0.0.1:{port}/health", "demo.lab")
    assert target.tls and target.port == port
    result = LoadRun([target], concurrency=2, duration=1.0, rate=20).run()
    assert result.requests >= 15 and result.failures == 0, result.errors
    # and curl, with the lab's CA, agrees the server is demo.lab
    _, ca = tls_server
    curl = subprocess.run(["curl", "-sS", "--cacert", str(ca), "--resolve", f"demo.lab:{port}:127.0.0.1",
                           f"https://demo.lab:{port}/"], capture_output=True, text=True, env={**os.environ})
    assert curl.returncode == 0 and curl.stdout == f"demo.lab:{port} demo.lab", curl.stderr
