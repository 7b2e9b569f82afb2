"""An app's secrets: an ansible-vault encrypted YAML file in the app's directory (deploykit.yml
runtime.secrets_file), holding `app_secrets: {NAME: value}`: environment variables of the app's container.

The file stays encrypted on disk; Ansible decrypts it in memory during a deploy (-e @FILE with the vault
password file). The password comes from a file (--vault-password-file, or ANSIBLE_VAULT_PASSWORD_FILE), or is
asked on a terminal and kept for the run in a private file that is removed at exit: it is never in an
argument list, a log, a report or the audit log. `deploy secrets edit` runs ansible-vault with $EDITOR.
"""

from __future__ import annotations

import atexit
import getpass
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from deploy_tool.appspec import ENV_NAME, AppSpec
from deploy_tool.errors import DeployError

TEMPLATE = """\
# The app's secrets, as environment variables of its container: NAME: value, one per line, under app_secrets.
# This file is encrypted with ansible-vault; `deploy secrets edit` opens it in $EDITOR.
app_secrets: {}
"""


def password_file(given: str | None, required: bool = False) -> Path | None:
    """The vault password file: given, from ANSIBLE_VAULT_PASSWORD_FILE, or asked on a terminal."""
    named = given or os.environ.get("ANSIBLE_VAULT_PASSWORD_FILE")
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise DeployError(f"vault password file {path} does not exist", hint="give the file's path")
        return path.resolve()
    if sys.stdin.isatty():
        return _asked_password()
    if required:
        raise DeployError("the app's secrets need their vault password",
                          hint="give --vault-password-file FILE, or run on a terminal to be asked")
    return None


def _asked_password() -> Path:
    """Ask for the password; keep it for this run only, in a file only this user reads, removed at exit."""
    password = getpass.getpass("vault password: ")
    if not password:
        raise DeployError("an empty vault password", hint="type the password the secrets file was encrypted with")
    directory = Path(tempfile.mkdtemp(prefix="deploykit-vault-"))
    atexit.register(shutil.rmtree, directory, True)
    path = directory / "password"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(password + "\n")
    return path


def decrypt_bytes(path: Path, password: Path, hint: str) -> bytes:
    """A vault-encrypted file's plain bytes, decrypted in memory (the secrets file, a TLS key)."""
    from ansible.errors import AnsibleError
    from ansible.parsing.vault import VaultLib, VaultSecret

    secret = VaultSecret(password.read_bytes().strip())
    try:
        plain: bytes = VaultLib([("default", secret)]).decrypt(path.read_bytes())
    except AnsibleError as exc:
        raise DeployError(f"{path} cannot be decrypted: {str(exc).splitlines()[0]}", hint=hint) from exc
    return plain


def decrypt(path: Path, password: Path) -> Any:
    """The secrets file's content, decrypted in memory."""
    return yaml.safe_load(decrypt_bytes(
        path, password, hint="check the vault password (and that the file was made by `deploy secrets edit`)"))


def check_secrets(path: Path, password: Path) -> dict[str, str]:
    """The secrets, checked: a mapping app_secrets of environment variable names to one-line values."""
    content = decrypt(path, password)
    secrets = content.get("app_secrets") if isinstance(content, dict) else None
    if not isinstance(content, dict) or set(content) != {"app_secrets"} or not isinstance(secrets, dict):
        raise DeployError(f"{path} must hold one mapping, app_secrets: {{NAME: value}}",
                          hint="deploy secrets edit")
    for name, value in secrets.items():
        if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
            raise DeployError(f"{path}: app_secrets key {name!r} is not an environment variable name",
                              hint="letters, digits and _, not starting with a digit")
        if isinstance(value, (dict, list)) or "\n" in str(value):
            raise DeployError(f"{path}: app_secrets {name} must be one line of text", hint="deploy secrets edit")
    return {name: str(value) for name, value in secrets.items()}


def edit_secrets(spec: AppSpec, action: str, password: Path | None) -> int:
    """`deploy secrets edit|view`: ansible-vault on the app's secrets file (made from TEMPLATE if missing)."""
    assert password is not None
    vault = str(Path(sys.executable).parent / "ansible-vault")
    path = spec.secrets_path
    if action == "view":
        if not path.exists():
            raise DeployError(f"{path} does not exist", hint="deploy secrets edit creates it")
        return subprocess.run([vault, "view", "--vault-password-file", str(password), str(path)]).returncode
    if not path.exists():
        with tempfile.TemporaryDirectory(prefix="deploykit-secrets-") as tmp:
            plain = Path(tmp) / "secrets.yml"
            plain.write_text(TEMPLATE, encoding="utf-8")
            subprocess.run([vault, "encrypt", "--vault-password-file", str(password), "--output", str(path),
                            str(plain)], check=True, capture_output=True)
    result = subprocess.run([vault, "edit", "--vault-password-file", str(password), str(path)])
    if result.returncode != 0:
        raise DeployError(f"ansible-vault edit {path} failed (exit {result.returncode})",
                          hint="check $EDITOR and the vault password")
    check_secrets(path, password)
    print(f"{path}: encrypted; its names: {', '.join(sorted(check_secrets(path, password))) or 'none yet'}")
    return 0
