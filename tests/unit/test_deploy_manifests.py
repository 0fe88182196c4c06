"""deploy/: every Kubernetes manifest against the Kubernetes OpenAPI schemas (kubernetes-validate ships
them), the compose file against the Compose specification's schema (vendored in check-jsonschema) plus
the cross-references ``docker compose config`` checks, and the systemd unit (``systemd-analyze verify``)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import check_jsonschema
import jsonschema
import kubernetes_validate
import pytest
import yaml

from regcast import __version__
from regcast.mirrors.document import load_document

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBE = DEPLOY / "kubernetes"
KUBERNETES_VERSION = "1.37.0"
COMPOSE_SCHEMA = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
MEASURED_PEAK_MIB = 118  # VmHWM of `regcast serve` copying 3 x 32 MiB to 2 targets (docs/decisions.md)


def kube_documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((KUBE / name).read_text()) if d]
    return docs


def find(kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in kube_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "CronJob":
        return dict(doc["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return dict(doc["spec"]["template"]["spec"])


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((KUBE / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize("doc", kube_documents(), ids=lambda d: f"{d['kind']}-{d['metadata']['name']}")
def test_kubernetes_manifest_is_valid(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)  # raises, naming the field


def test_kubernetes_validation_would_catch_a_typo() -> None:
    doc = json.loads(json.dumps(find("Deployment", "regcast-serve")))
    doc["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_serve_deployment_probes_service_and_budget_fit_together() -> None:
    serve, service, pdb = (
        find("Deployment", "regcast-serve"),
        find("Service", "regcast"),
        find("PodDisruptionBudget", "regcast-serve"),
    )
    labels = serve["spec"]["template"]["metadata"]["labels"]
    assert serve["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert serve["spec"]["replicas"] > pdb["spec"]["minAvailable"]  # a node drain never takes the API down
    (container,) = serve["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["serve"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    port = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in port
    settings = find("ConfigMap", "regcast-settings")["data"]
    assert int(settings["REGCAST_PORT"]) == port["http"] and settings["REGCAST_HOST"] == "0.0.0.0"


def _mib(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * (1024 if unit == "Gi" else 1)


@pytest.mark.parametrize(
    ("kind", "name"), [("Deployment", "regcast-serve"), ("Deployment", "regcast-worker"), ("CronJob", "regcast-sync")]
)
def test_pods_are_locked_down_and_sized_from_the_measurement(kind: str, name: str) -> None:
    spec = pod_spec(find(kind, name))
    assert spec["securityContext"]["runAsNonRoot"] is True
    secret = find("Secret", "regcast")["stringData"]
    for c in spec["containers"]:
        assert c["image"].endswith(f":{__version__}")
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        requests, limits = c["resources"]["requests"], c["resources"]["limits"]
        assert MEASURED_PEAK_MIB <= _mib(requests["memory"]) < _mib(limits["memory"])
        for env in c.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            assert ref is None or (ref["name"] == "regcast" and ref["key"] in secret)
    for volume in spec["volumes"]:
        for item in volume.get("secret", {}).get("items", []):
            assert item["key"] in secret


def test_the_shipped_mirror_set_is_a_valid_document() -> None:
    cron = find("CronJob", "regcast-sync")
    (container,) = pod_spec(cron)["containers"]
    mount = container["volumeMounts"][0]
    configmap = find("ConfigMap", pod_spec(cron)["volumes"][0]["configMap"]["name"])
    (filename,) = configmap["data"]
    assert container["args"] == ["sync", f"{mount['mountPath']}/{filename}"]
    document = load_document(configmap["data"][filename], {})
    assert [m.name for m in document.mirrors] == ["base-images"]


# -- compose ----------------------------------------------------------------------------------------
_VAR = re.compile(r"\$\{(\w+)(?::?([?-])([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} (what ``docker compose config`` resolves)."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op == "?":
            raise ValueError(f"required variable {name} is missing a value: {arg}")
        return arg if op == "-" else ""

    return _VAR.sub(one, text)


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(
        interpolate((DEPLOY / "compose.yaml").read_text(), {"POSTGRES_PASSWORD": "pw"} if env is None else env)
    )
    return doc


def test_compose_file_validates_against_the_compose_specification() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    jsonschema.validate(compose(), schema)
    broken = compose()
    broken["services"]["serve"]["restrat"] = "always"  # a typo compose would refuse
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_compose_needs_the_database_password() -> None:
    with pytest.raises(ValueError, match="POSTGRES_PASSWORD"):
        compose({})


def test_compose_references_resolve() -> None:
    doc = compose()
    services, secrets = doc["services"], doc["secrets"]
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
        for s in svc.get("secrets", []):
            assert s in secrets, f"{name} uses unknown secret {s}"
        for v in svc.get("volumes", []):
            source = v.split(":", 1)[0]
            assert source in doc.get("volumes", {}) or (DEPLOY / source).exists(), f"{name}: {source}"
    for s in secrets.values():
        assert s["file"].startswith("./secrets/")  # created by the user, never committed
    build = services["serve"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()


def test_compose_runs_two_api_replicas_behind_one_port_and_one_worker() -> None:
    services = compose()["services"]
    assert services["serve"]["deploy"]["replicas"] == 2 and services["serve"]["command"] == ["serve"]
    assert services["worker"]["command"] == ["worker"] and "deploy" not in services["worker"]
    published = {name: svc["ports"] for name, svc in services.items() if "ports" in svc}
    assert list(published) == ["proxy"] and len(published["proxy"]) == 1
    port = services["serve"]["environment"]["REGCAST_PORT"]
    assert f"server serve:{port}" in (DEPLOY / "nginx.conf").read_text()
    listen = re.search(r"listen (\d+);", (DEPLOY / "nginx.conf").read_text())
    assert listen and published["proxy"][0].endswith(f":{listen.group(1)}")
    for name in ("serve", "worker"):
        env = services[name]["environment"]
        assert env["REGCAST_DATABASE_URL"].startswith("postgresql://") and "@postgres:" in env["REGCAST_DATABASE_URL"]
        assert env["REGCAST_SECRET_KEY_FILE"] == "/run/secrets/regcast_secret_key"
        assert "regcast_secret_key" in services[name]["secrets"]


# -- systemd ----------------------------------------------------------------------------------------
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (DEPLOY / "systemd" / "regcast.service").read_text()
    assert "ExecStart=/opt/regcast/bin/regcast serve" in unit
    assert "Environment=REGCAST_SECRET_KEY_FILE=%d/secret_key" in unit and "LoadCredential=secret_key:" in unit
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    regcast = Path(sys.executable).parent / "regcast"  # the unit's ExecStart, pointed at this install
    copy = tmp_path / "regcast.service"
    copy.write_text(unit.replace("/opt/regcast/bin/regcast", str(regcast)))
    r = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    problems = [ln for ln in r.stderr.splitlines() if "regcast.service" in ln]
    assert r.returncode == 0 and not problems, r.stderr


def test_secret_key_from_a_file(tmp_path: Path) -> None:
    from regcast._exceptions import ConfigError
    from regcast.config import Settings

    key = tmp_path / "secret_key"
    key.write_text("k" * 40 + "\n")
    assert Settings(secret_key_file=str(key)).encryption_key() == "k" * 40
    assert Settings(secret_key="direct", secret_key_file=str(key)).encryption_key() == "direct"
    key.write_text("short\n")
    with pytest.raises(ConfigError, match="under 16 characters"):
        Settings(secret_key_file=str(key)).encryption_key()
    with pytest.raises(ConfigError, match="cannot read REGCAST_SECRET_KEY_FILE"):
        Settings(secret_key_file=str(tmp_path / "missing")).encryption_key()
