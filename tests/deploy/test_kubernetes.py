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
    """Each manifest by its kind; a kind found more than once (the artifacts and backups volume claims)
    by ``kind/name`` for every one of them, so no manifest hides another."""
    docs = list(manifests().values())
    seen = [doc["kind"] for doc in docs]
    return {doc["kind"] if seen.count(doc["kind"]) == 1 else f"{doc['kind']}/{doc['metadata']['name']}": doc
            for doc in docs}


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
    assert kinds[f"PersistentVolumeClaim/{volumes['artifacts']['persistentVolumeClaim']['claimName']}"]
    assert volumes["keys"]["secret"]["secretName"] == secret["metadata"]["name"]
    keys_path = next(e for e in container["env"] if e["name"] == "API_KEYS_FILE")["value"]
    keys_mount = next(m for m in container["volumeMounts"] if m["name"] == "keys")["mountPath"]
    assert Path(keys_path).parent == Path(keys_mount) and Path(keys_path).name in secret["stringData"]
    assert kinds["ConfigMap"]["data"]["ARTIFACTS_DIR"] == next(m["mountPath"] for m in container["volumeMounts"]
                                                               if m["name"] == "artifacts")
    port = container["ports"][0]["containerPort"]
    assert port in [p["port"] for rule in kinds["NetworkPolicy"]["spec"]["ingress"] for p in rule["ports"]]


def test_every_file_the_server_is_told_to_read_from_a_secret_is_mounted():
    """A path setting under a secret volume's mount names one of the files that volume projects."""
    kinds = by_kind()
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (app,) = pod["containers"]
    mounts = {m["mountPath"]: m["name"] for m in app["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    checked = 0
    for env in app["env"]:
        path = Path(env.get("value") or "")
        volume = volumes.get(mounts.get(str(path.parent), ""), {})
        if "secret" in volume:
            assert path.name in [item["path"] for item in volume["secret"]["items"]], env["name"]
            assert path.name in kinds["Secret"]["stringData"], env["name"]
            checked += 1
    assert checked >= 2  # API_KEYS_FILE and MODEL_TRUSTED_KEYS


def test_the_backup_cronjob_runs_the_server_image_into_a_volume_of_its_own():
    kinds = by_kind()
    server = kinds["Deployment"]["spec"]["template"]
    (app,) = server["spec"]["containers"]
    cronjob = kinds["CronJob"]
    job = cronjob["spec"]["jobTemplate"]["spec"]
    pod = job["template"]
    (backup,) = pod["spec"]["containers"]
    assert backup["image"] == app["image"]  # the same image, so the same code and its pg_dump
    assert len(cronjob["spec"]["schedule"].split()) == 5 and cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert pod["spec"]["restartPolicy"] in ("Never", "OnFailure") and job["activeDeadlineSeconds"] > 0

    command = backup["command"]
    assert command[:4] == ["python", "-m", "service", "backup"]
    dest, keep = command[4], int(command[command.index("--keep") + 1])
    assert keep >= 1
    mounts = {m["name"]: m["mountPath"] for m in backup["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    claims = {name: v["persistentVolumeClaim"]["claimName"] for name, v in volumes.items() if "persistentVolumeClaim" in v}
    backups = next(name for name, path in mounts.items() if path == dest)
    artifacts = next(name for name, path in mounts.items() if path == kinds["ConfigMap"]["data"]["ARTIFACTS_DIR"])
    server_claims = [v["persistentVolumeClaim"]["claimName"] for v in server["spec"]["volumes"]
                     if "persistentVolumeClaim" in v]
    assert claims[artifacts] in server_claims  # the volume the server reads its models from
    assert claims[backups] not in server_claims and claims[backups] != claims[artifacts]
    assert f"PersistentVolumeClaim/{claims[backups]}" in kinds and f"PersistentVolumeClaim/{claims[artifacts]}" in kinds
    assert not Path(dest).is_relative_to(mounts[artifacts])  # a backup inside ARTIFACTS_DIR is refused

    # the store the server writes, its settings, and the public key its versions are checked with
    assert backup["envFrom"] == app["envFrom"]
    env = {e["name"]: e for e in backup["env"]}
    assert env["DATABASE_URL"] == next(e for e in app["env"] if e["name"] == "DATABASE_URL")
    trusted = Path(env["MODEL_TRUSTED_KEYS"]["value"])
    keys = volumes[next(name for name, path in mounts.items() if path == str(trusted.parent))]["secret"]
    assert trusted.name in [item["path"] for item in keys["items"]]
    assert trusted.name in kinds["Secret"]["stringData"]
    assert kinds["ConfigMap"]["data"]["BACKUPS_EXPECTED"] == "1"  # the never-succeeded alert is armed

    # locked down like the server, and never one of the Service's endpoints
    assert pod["spec"]["securityContext"]["runAsNonRoot"] and pod["spec"]["securityContext"]["runAsUser"] == 10001
    context = backup["securityContext"]
    assert context["readOnlyRootFilesystem"] and not context["allowPrivilegeEscalation"]
    assert context["capabilities"]["drop"] == ["ALL"]
    for writable in ("/tmp", "/dev/shm"):
        assert "emptyDir" in volumes[next(name for name, path in mounts.items() if path == writable)], writable
    labels = pod["metadata"]["labels"]
    for selector in (kinds["Service"]["spec"]["selector"], kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]):
        assert not selector.items() <= labels.items()
