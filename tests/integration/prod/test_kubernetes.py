"""The Kubernetes manifests (issue 13, item 5). No cluster runs here, so: the production overlay
and the base are rendered by Kustomize (`kubectl kustomize`), every object is validated against
the Kubernetes schemas with kubernetes-validate (strict: unknown fields fail), the two custom
resources (ServiceMonitor, CloudNativePG Cluster) against a structural schema of the fields we
use, and the wiring is checked: the ConfigMap's qes.toml loads and its ports are the probes'
and the Service's, secrets come from Secrets and are never inlined, selectors select, the
migration Job's command really migrates a database."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from signer.settings.config import load_settings
from tests.support.service import ROOT

KUBE = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.30.0"
SECRET_ENV = ("QES_HSM_PIN", "QES_DATABASE_URL", "QES_LOG_PRIVACY_KEY",
              "QES_WEB_SIGNING_CLIENT_SECRET", "QES_AUDIT_UI_CLIENT_SECRET")  # fmt: skip

_SELECTOR = {
    "type": "object",
    "required": ["matchLabels"],
    "properties": {
        "matchLabels": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {"type": "string"},
        }
    },
}
CUSTOM_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    # monitoring.coreos.com/v1 ServiceMonitor: the fields of its CRD that we set.
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object",
        "required": ["metadata", "spec"],
        "properties": {
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "selector": _SELECTOR,
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["port"],
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "interval": {"type": "string", "pattern": "^[0-9]+[smh]$"},
                                "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+[smh]$"},
                            },
                        },
                    },
                },
            }
        },
    },
    # postgresql.cnpg.io/v1 Cluster (CloudNativePG >= 1.25).
    ("postgresql.cnpg.io/v1", "Cluster"): {
        "type": "object",
        "required": ["metadata", "spec"],
        "properties": {
            "spec": {
                "type": "object",
                "required": ["instances", "storage", "postgresql"],
                "additionalProperties": False,
                "properties": {
                    "instances": {"type": "integer", "minimum": 3},
                    "imageName": {"type": "string"},
                    "primaryUpdateStrategy": {"enum": ["supervised", "unsupervised"]},
                    "postgresql": {
                        "type": "object",
                        "required": ["synchronous"],
                        "properties": {
                            "synchronous": {
                                "type": "object",
                                "required": ["method", "number"],
                                "additionalProperties": False,
                                "properties": {
                                    "method": {"enum": ["any", "first"]},
                                    "number": {"type": "integer", "minimum": 1},
                                    "dataDurability": {"enum": ["required", "preferred"]},
                                },
                            },
                            "parameters": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                        },
                    },
                    "bootstrap": {"type": "object"},
                    "storage": {"type": "object", "required": ["size"]},
                    "walStorage": {"type": "object", "required": ["size"]},
                    "affinity": {"type": "object"},
                    "monitoring": {"type": "object"},
                    "resources": {"type": "object"},
                },
            }
        },
    },
}


def render(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail(
            "kubectl (for `kubectl kustomize`) is missing: run `bash deploy/setup.sh --test`"
        )
    done = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module")
def production() -> list[dict[str, Any]]:
    return render(KUBE / "overlays" / "production")


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


@pytest.mark.parametrize("variant", ["base", "overlays/production"])
def test_every_manifest_is_valid(variant: str) -> None:
    docs = render(KUBE / variant)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "ConfigMap",
            "ServiceMonitor", "Job", "ServiceAccount"} <= kinds  # fmt: skip
    for doc in docs:
        schema = CUSTOM_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
        if schema is not None:
            jsonschema.validate(doc, schema)
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_a_typo_is_caught() -> None:
    """The validation can fail: an unknown field in a container is an error."""
    docs = render(KUBE / "base")
    deployment = one(docs, "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    cluster = one(render(KUBE / "overlays" / "production"), "Cluster")
    cluster["spec"]["postgresql"]["synchronous"]["number"] = 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cluster, CUSTOM_SCHEMAS[("postgresql.cnpg.io/v1", "Cluster")])


def _signer(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any], Any]:
    deployment = one(docs, "Deployment", "qes-signer")
    container = one_container(deployment["spec"]["template"]["spec"], "qes-signer")
    config_map = one(docs, "ConfigMap", "qes-signer-config")
    return deployment, container, config_map


def one_container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in pod["containers"] if c["name"] == name]
    assert len(found) == 1
    return found[0]


def _settings(config_map: dict[str, Any], tmp_path: Path) -> Any:
    path = tmp_path / "qes.toml"
    path.write_text(config_map["data"]["qes.toml"])
    env = {name: "x" for name in SECRET_ENV} | {
        "QES_LOG_PRIVACY_KEY": "00" * 32,
        "QES_DATABASE_URL": "postgresql://qes-db-rw:5432/qes",
    }
    return load_settings(path, env=env)


def test_probes_ports_and_config_agree(production: list[dict[str, Any]], tmp_path: Path) -> None:
    deployment, container, config_map = _signer(production)
    assert deployment["spec"]["replicas"] == 3
    settings = _settings(config_map, tmp_path)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"https": settings.server.port, "metrics": settings.metrics.port}
    assert settings.metrics.enabled and settings.server.tls is not None
    assert settings.server.public_url.startswith("https://")
    probes = {k: container[k]["httpGet"] for k in ("readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    for probe in probes.values():
        assert probe["port"] in ports and probe["scheme"] == "HTTPS"
    # The config file, the TLS files, the HSM module and /tmp are where the mounts put them.
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    config_path = container["args"][container["args"].index("--config") + 1]
    assert volumes[mounts[config_path]["name"]]["configMap"]["name"] == "qes-signer-config"
    tls_dir = str(settings.server.tls.certificate_file.parent)
    assert str(settings.server.tls.key_file.parent) == tls_dir
    assert "secretName" in volumes[mounts[tls_dir]["name"]]["secret"]
    assert any(settings.hsm.module.startswith(p + "/") for p in mounts)
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]


def test_secrets_are_referenced_never_inlined(production: list[dict[str, Any]]) -> None:
    assert not [d for d in production if d["kind"] == "Secret"]
    _, container, _ = _signer(production)
    job = one(production, "Job")
    for c in (container, job["spec"]["template"]["spec"]["containers"][0]):
        env = {e["name"]: e for e in c["env"]}
        for name in SECRET_ENV:
            if name in env:
                assert "value" not in env[name] and "secretKeyRef" in env[name]["valueFrom"]
        assert {"QES_HSM_PIN", "QES_DATABASE_URL"} <= set(env)
    assert set(SECRET_ENV) <= {e["name"] for e in container["env"]}
    text = yaml.safe_dump_all(production)
    assert not re.search(r"postgres(ql)?://[^\s\"']*:[^\s\"']*@", text)  # no password in a URL


def test_security_context_and_resources(production: list[dict[str, Any]]) -> None:
    deployment, container, _ = _signer(production)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for c in (*pod["containers"], *pod.get("initContainers", [])):
        ctx = c["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"]["drop"] == ["ALL"]
        assert c["resources"]["requests"]["memory"] and "memory" in c["resources"]["limits"]
    assert container["resources"]["requests"]["cpu"]


def test_selectors_select(production: list[dict[str, Any]]) -> None:
    deployment, container, _ = _signer(production)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
        return bool(selector) and selector.items() <= labels.items()

    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    service = one(production, "Service", "qes-signer")
    assert selects(service["spec"]["selector"], pod_labels)
    names = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= names
    monitor = one(production, "ServiceMonitor")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {
        p["name"] for p in service["spec"]["ports"]
    }
    pdb = one(production, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    policy = one(production, "NetworkPolicy")
    assert selects(policy["spec"]["podSelector"]["matchLabels"], pod_labels)
    allowed = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert {p["containerPort"] for p in container["ports"]} <= allowed
    # The database: the Secret CloudNativePG makes for the Cluster, and egress to its pods.
    cluster = one(production, "Cluster")
    env = {e["name"]: e for e in container["env"]}
    db_ref = env["QES_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert db_ref == {"name": f"{cluster['metadata']['name']}-app", "key": "uri"}
    egress_pods = [t["podSelector"]["matchLabels"] for rule in policy["spec"]["egress"]
                   for t in rule["to"] if "podSelector" in t]  # fmt: skip
    assert {"cnpg.io/cluster": cluster["metadata"]["name"]} in egress_pods
    assert cluster["spec"]["postgresql"]["synchronous"]["number"] >= 1
    assert {d["metadata"].get("namespace") for d in production if d["kind"] != "Namespace"} == {
        "qes-signer"
    }


def test_migration_job_command_migrates(
    production: list[dict[str, Any]], database_url: str, tmp_path: Path
) -> None:
    """The Job's command, run here against a database: it exits 0 naming the schema version."""
    job = one(production, "Job")
    container = job["spec"]["template"]["spec"]["containers"][0]
    command = container["command"]
    assert command[:2] == ["/opt/qes-signer/bin/qes", "migrate"]
    config_map = one(production, "ConfigMap", "qes-signer-config")
    config = tmp_path / "qes.toml"
    config.write_text(config_map["data"]["qes.toml"])
    args = [config if a == "/etc/qes-signer/qes.toml" else a for a in command[1:]]
    env = {"QES_HSM_PIN": "x", "QES_DATABASE_URL": database_url,
           "QES_WEB_SIGNING_CLIENT_SECRET": "x", "QES_AUDIT_UI_CLIENT_SECRET": "x",
           "PATH": "/usr/bin:/bin"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "signer", *map(str, args)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"database schema at version \d+\n", done.stdout), done.stdout
