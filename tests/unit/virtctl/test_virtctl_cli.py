"""virtctl end to end against a fake apiserver on loopback: requests sent, messages and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from conftest import FakeApi, status, write_kubeconfig

from virtctl.cli import program_name, root, run
from virtctl.completion import cobra_lines
from virtctl.exitcodes import ExitCode

pytestmark = pytest.mark.unit

SUB = "/apis/subresources.kubevirt.io/v1/namespaces/testns"
KV = "/apis/kubevirt.io/v1/namespaces/testns"


def test_start_sends_kubevirts_body_with_the_users_token(
    fake_api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_api.route("PUT", f"{SUB}/virtualmachines/vm1/start", 202)
    assert run(["start", "vm1", "--paused"]) == ExitCode.OK
    (sent,) = fake_api.sent("PUT")
    assert sent.body == {"paused": True}
    assert sent.headers["authorization"] == "Bearer test-token"
    assert capsys.readouterr().out == "VM vm1 was scheduled to start\n"


def test_flags_work_before_and_after_the_command(fake_api: FakeApi, kubeconfig: Path) -> None:
    fake_api.route("PUT", "/apis/subresources.kubevirt.io/v1/namespaces/prod/virtualmachines/vm1/stop", 202)
    fake_api.route("PUT", "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/vm1/stop", 202)
    assert run(["stop", "vm1", "-n", "prod"]) == ExitCode.OK
    assert run(["-n", "prod", "stop", "vm1"]) == ExitCode.OK
    assert run(["--context", "other", "stop", "vm1"]) == ExitCode.OK  # no namespace in that context: default
    assert [r.path.split("/")[5] for r in fake_api.sent("PUT")] == ["prod", "prod", "default"]


def test_kubeconfig_flag_beats_the_environment(
    fake_api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    path = write_kubeconfig(tmp_path / "kc", fake_api.url, namespace="team")
    fake_api.route("PUT", "/apis/subresources.kubevirt.io/v1/namespaces/team/virtualmachines/v/restart", 202)
    assert run(["restart", "v", "--kubeconfig", str(path)]) == ExitCode.OK


def test_forced_stop_accepts_kubevirts_flag_spelling(fake_api: FakeApi, kubeconfig: Path) -> None:
    fake_api.route("PUT", f"{SUB}/virtualmachines/vm1/stop", 202)
    assert run(["stop", "vm1", "--force=true", "--grace-period=0", "--dry-run=false"]) == ExitCode.OK
    assert fake_api.sent("PUT")[0].body == {"gracePeriod": 0}


def test_force_without_grace_period_is_a_usage_error(
    fake_api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["stop", "vm1", "--force"]) == ExitCode.USAGE
    assert "--force and --grace-period go together" in capsys.readouterr().err
    assert fake_api.requests == []


def test_forbidden(fake_api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.route("PUT", f"{SUB}/virtualmachines/vm1/start", 403, status(403, "Forbidden", "User cannot"))
    assert run(["start", "vm1"]) == ExitCode.FORBIDDEN
    err = capsys.readouterr().err
    assert "error: cannot start VirtualMachine testns/vm1" in err
    assert 'verbs: ["update"]' in err


def test_subresource_api_absent(fake_api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["start", "vm1"]) == ExitCode.UNAVAILABLE
    assert "subresources.kubevirt.io/v1 is not served" in capsys.readouterr().err


def test_missing_vm(fake_api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.serve_subresources()
    missing = status(404, "NotFound", 'virtualmachines.kubevirt.io "vm1" not found', name="vm1")
    fake_api.route("PUT", f"{SUB}/virtualmachines/vm1/start", 404, missing)
    assert run(["start", "vm1"]) == ExitCode.NOT_FOUND
    assert capsys.readouterr().err.strip() == "error: VirtualMachine testns/vm1 not found"


def test_already_running(fake_api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.route("PUT", f"{SUB}/virtualmachines/vm1/start", 409, status(409, "Conflict", "VM is already running"))
    assert run(["start", "vm1"]) == ExitCode.CONFLICT
    assert "VM is already running" in capsys.readouterr().err


def test_pausing_a_stopped_vm_says_to_start_it(
    fake_api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_api.serve_subresources()
    fake_api.route("PUT", f"{SUB}/virtualmachineinstances/vm1/pause", 404, status(404, "NotFound", "x", name="vm1"))
    fake_api.route("GET", f"{KV}/virtualmachines/vm1", 200, {"spec": {"runStrategy": "Halted"}})
    assert run(["pause", "VM", "vm1"]) == ExitCode.CONFLICT
    assert "not running (runStrategy Halted" in capsys.readouterr().err


def test_migrate_cancel_deletes_the_active_migration(
    fake_api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    items = [
        {"metadata": {"name": "old"}, "spec": {"vmiName": "vm1"}, "status": {"phase": "Succeeded"}},
        {"metadata": {"name": "other"}, "spec": {"vmiName": "vm2"}, "status": {"phase": "Running"}},
        {"metadata": {"name": "live"}, "spec": {"vmiName": "vm1"}, "status": {"phase": "Running"}},
    ]
    fake_api.route("GET", f"{KV}/virtualmachineinstancemigrations", 200, {"items": items})
    fake_api.route("DELETE", f"{KV}/virtualmachineinstancemigrations/live", 200)
    assert run(["migrate-cancel", "vm1", "--dry-run"]) == ExitCode.OK
    (deleted,) = fake_api.sent("DELETE")
    assert deleted.path.endswith("/live") and deleted.query == {"dryRun": ["All"]}
    assert run(["migrate-cancel", "vm3"]) == ExitCode.NOT_FOUND
    assert "found no migration to cancel for VirtualMachine testns/vm3" in capsys.readouterr().err


def test_migrate_with_added_node_selector(fake_api: FakeApi, kubeconfig: Path) -> None:
    fake_api.route("PUT", f"{SUB}/virtualmachines/vm1/migrate", 202)
    assert run(["migrate", "vm1", "--addedNodeSelector", "disk=ssd,zone=a"]) == ExitCode.OK
    assert fake_api.sent("PUT")[0].body == {"addedNodeSelector": {"disk": "ssd", "zone": "a"}}


def test_guestosinfo_prints_json(fake_api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    info = {"guestAgentVersion": "8.1", "os": {"name": "Fedora Linux"}}
    fake_api.route("GET", f"{SUB}/virtualmachineinstances/vm1/guestosinfo", 200, info)
    assert run(["guestosinfo", "vm1"]) == ExitCode.OK
    assert json.loads(capsys.readouterr().out) == info


def test_expose_creates_the_service(fake_api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vm = {"spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"domain": {"devices": {}}}}}}
    fake_api.route("GET", f"{KV}/virtualmachines/vm1", 200, vm)
    fake_api.route("POST", "/api/v1/namespaces/testns/services", 201)
    assert run(["expose", "vm", "vm1", "--name", "web", "--port", "80", "--target-port", "8080"]) == ExitCode.OK
    (created,) = fake_api.sent("POST")
    assert created.body["spec"]["selector"] == {"app": "web"}
    assert created.body["spec"]["ports"] == [{"protocol": "TCP", "port": 80, "targetPort": 8080}]
    assert "Service web successfully exposed for vm vm1" in capsys.readouterr().out


def test_version_warns_when_client_and_server_differ(
    fake_api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_api.route("GET", "/apis/subresources.kubevirt.io/v1/version", 200, {"gitVersion": "v9.9.9"})
    assert run(["version"]) == ExitCode.OK
    out, err = capsys.readouterr()
    assert out.splitlines()[1] == 'Server Version: version.Info{GitVersion:"v9.9.9"}'
    assert "differ" in err


def test_version_client_only_needs_no_cluster(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")
    assert run(["version", "--client", "-o", "json"]) == ExitCode.OK
    assert list(json.loads(capsys.readouterr().out)) == ["clientVersion"]


def test_no_kubeconfig(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nothing-here"))
    assert run(["start", "vm1"]) == ExitCode.CONFIG
    assert "no kubeconfig found" in capsys.readouterr().err


def test_unknown_context(kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["start", "vm1", "--context", "nope"]) == ExitCode.CONFIG
    assert "context 'nope' is not in the kubeconfig" in capsys.readouterr().err


def test_unreachable_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:9")))
    assert run(["start", "vm1"]) == ExitCode.CONFIG
    assert "cannot reach the Kubernetes API server at http://127.0.0.1:9" in capsys.readouterr().err


def _commands(group: click.Group) -> list[click.Command]:
    found: list[click.Command] = []
    for command in group.commands.values():
        found += _commands(command) if isinstance(command, click.Group) else [command]
    return found


@pytest.mark.parametrize("command", _commands(root), ids=lambda c: c.name)
def test_every_command_has_help_with_examples(command: click.Command) -> None:
    ctx = click.Context(root, info_name="kubectl virt")
    help_text = command.get_help(click.Context(command, parent=ctx, info_name=command.name))
    assert "Examples:" in help_text
    assert "kubectl virt " in help_text  # examples name the program as it was called
    assert "--kubeconfig" in help_text and "--namespace" in help_text


def test_plugin_mode_name() -> None:
    assert program_name("/usr/local/bin/kubectl-virt") == "kubectl virt"
    assert program_name("/usr/local/bin/virtctl") == "virtctl"


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["start"]) == ExitCode.USAGE
    assert run(["no-such-command"]) == ExitCode.USAGE
    assert run(["pause", "pod", "x"]) == ExitCode.USAGE


def test_completion_of_commands_and_vm_names(fake_api: FakeApi, kubeconfig: Path) -> None:
    lines = cobra_lines(root, ["st"])
    assert [line.split("\t")[0] for line in lines] == ["start", "stop", ":4"]
    vms = {"items": [{"metadata": {"name": "db"}}, {"metadata": {"name": "web"}}, {"metadata": {"name": "web2"}}]}
    fake_api.route("GET", f"{KV}/virtualmachines", 200, vms)
    assert cobra_lines(root, ["start", "w"]) == ["web", "web2", ":4"]
    assert cobra_lines(root, ["pause", "vm", ""]) == ["db", "web", "web2", ":4"]


def test_completion_never_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")
    assert cobra_lines(root, ["start", ""]) == [":4"]


def test_completion_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["completion", "bash"]) == ExitCode.OK
    assert "_VIRTCTL_COMPLETE" in capsys.readouterr().out


def test_without_a_command_the_help_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    assert run([]) == ExitCode.OK
    assert capsys.readouterr().out.startswith("Usage: virtctl [OPTIONS] [COMMAND]")
    assert run(["create"]) == ExitCode.OK
    assert "vm  Create a VirtualMachine manifest." in capsys.readouterr().out
