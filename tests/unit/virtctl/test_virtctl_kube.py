"""Credentials are found the way kubectl finds them: flag, $KUBECONFIG (merged files), ~/.kube/config, in-cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_kubeconfig
from kubernetes.config import incluster_config

from podvirt_common import certs
from virtctl import kube
from virtctl.errors import VirtctlError
from virtctl.exitcodes import ExitCode
from virtctl.kube import KubeClient, Selection, load_credentials

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_kubeconfig_files_are_merged_like_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": []}
    (tmp_path / "first").write_text(json.dumps(first))
    second = write_kubeconfig(tmp_path / "second", "http://127.0.0.1:1234", namespace="team")
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'first'}:{second}")
    credentials = load_credentials(Selection())
    assert credentials.server == "http://127.0.0.1:1234"
    assert credentials.namespace == "team" and not credentials.namespace_explicit
    assert credentials.auth_header() == "Bearer test-token"
    assert load_credentials(Selection(namespace="x")).namespace_explicit


def test_home_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "home" / ".kube").mkdir(parents=True)
    write_kubeconfig(tmp_path / "home" / ".kube" / "config", "http://127.0.0.1:1", namespace=None)
    assert load_credentials(Selection()).namespace == "default"


def test_in_cluster_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("pod-token")
    (account / "namespace").write_text("workloads\n")
    (account / "ca.crt").write_bytes(certs.new_ca("test-ca").cert_pem)
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(account / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(account / "ca.crt"))
    monkeypatch.setattr(kube, "SERVICE_ACCOUNT_DIR", account)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    credentials = load_credentials(Selection())
    assert credentials.server == "https://10.96.0.1:443"
    assert credentials.namespace == "workloads"
    assert credentials.auth_header() == "bearer pod-token"
    assert credentials.ssl_context is not None
    assert KubeClient(credentials).websocket_url("/x") == "wss://10.96.0.1:443/x"


def test_no_credentials_anywhere() -> None:
    with pytest.raises(VirtctlError) as raised:
        load_credentials(Selection())
    assert raised.value.exit_code == ExitCode.CONFIG
    assert "pass --kubeconfig, set KUBECONFIG, or run inside a pod" in raised.value.message


@pytest.mark.parametrize(
    ("server", "no_proxy", "expected"),
    [
        ("https://127.0.0.1:6443", None, None),
        ("https://localhost:6443", None, None),
        ("https://api.example.com", None, "http://proxy:3128"),
        ("https://api.example.com", "example.com", None),
        ("https://api.example.com", ".example.com,other", None),
        ("https://api.example.org", "example.com", "http://proxy:3128"),
        ("https://api.example.org", "*", None),
    ],
)
def test_proxy_choice(server: str, no_proxy: str | None, expected: str | None) -> None:
    assert kube._proxy_for(server, "http://proxy:3128", no_proxy) == expected
