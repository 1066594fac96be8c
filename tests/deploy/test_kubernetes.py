"""deploy/kubernetes/: every manifest is valid for a pinned Kubernetes in strict mode, and they fit together."""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO

KUBERNETES_VERSION = "1.33.0"  # the oldest minor release we support; strict: unknown fields fail
FOLDER = REPO / "deploy" / "kubernetes"


def manifests() -> dict[str, dict]:
    kustomization = yaml.safe_load((FOLDER / "kustomization.yaml").read_text())
    return {name: yaml.safe_load((FOLDER / name).read_text()) for name in kustomization["resources"]}


def test_kustomization_lists_every_manifest():
    listed = set(yaml.safe_load((FOLDER / "kustomization.yaml").read_text())["resources"])
    assert listed == {path.name for path in FOLDER.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize("name", sorted(manifests()))
def test_manifest_is_valid_in_strict_mode(name: str):
    kubernetes_validate.validate(manifests()[name], KUBERNETES_VERSION, strict=True)


def test_strict_mode_refuses_an_unknown_field():
    deployment = copy.deepcopy(manifests()["deployment.yaml"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def by_kind() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in manifests().values()}


def test_the_pod_is_locked_down_and_probed():
    pod = by_kind()["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] and not context["allowPrivilegeEscalation"]
    assert context["capabilities"]["drop"] == ["ALL"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == container["startupProbe"]["httpGet"]["path"] == "/healthz"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60  # the model load, at WORKER_TIMEOUT or more
    assert container["lifecycle"]["preStop"]
    # the grace period covers the preStop delay and Gunicorn's graceful_timeout (30 s)
    assert pod["terminationGracePeriodSeconds"] >= 5 + 30
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(mounts.values()) <= set(volumes)
    for writable in ("/app/var", "/tmp", "/dev/shm"):
        assert "emptyDir" in volumes[mounts[writable]], writable
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert "requests" in container["resources"] and "memory" in container["resources"]["limits"]


def test_the_manifests_refer_to_each_other():
    kinds = by_kind()
    deployment, labels = kinds["Deployment"], kinds["Deployment"]["spec"]["template"]["metadata"]["labels"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert kinds["Service"]["spec"]["selector"].items() <= labels.items()
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert kinds["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert container["envFrom"][0]["configMapRef"]["name"] == kinds["ConfigMap"]["metadata"]["name"]
    database = next(e for e in container["env"] if e["name"] == "DATABASE_URL")["valueFrom"]["secretKeyRef"]
    secret = kinds["Secret"]
    assert database["name"] == secret["metadata"]["name"] and database["key"] in secret["stringData"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["artifacts"]["persistentVolumeClaim"]["claimName"] == kinds["PersistentVolumeClaim"]["metadata"]["name"]
    assert volumes["keys"]["secret"]["secretName"] == secret["metadata"]["name"]
    keys_path = next(e for e in container["env"] if e["name"] == "API_KEYS_FILE")["value"]
    keys_mount = next(m for m in container["volumeMounts"] if m["name"] == "keys")["mountPath"]
    assert Path(keys_path).parent == Path(keys_mount) and Path(keys_path).name in secret["stringData"]
    assert kinds["ConfigMap"]["data"]["ARTIFACTS_DIR"] == next(m["mountPath"] for m in container["volumeMounts"]
                                                               if m["name"] == "artifacts")
    port = container["ports"][0]["containerPort"]
    assert port in [p["port"] for rule in kinds["NetworkPolicy"]["spec"]["ingress"] for p in rule["ports"]]
