"""The deployment artifacts, checked without a cluster or a container engine:

- each kustomize overlay (dev, staging, prod) rendered by `kubectl kustomize`;
- every object validated against the Kubernetes 1.31 schemas by `kubernetes-validate` in strict
  mode (unknown fields are errors); the ServiceMonitor (a Prometheus Operator CRD, which those
  schemas do not have) against the fields the operator reads;
- what must hold between the objects and Sluice: probes on the V2 health routes of the port the
  config listens on, the grace period covering preStop + drain delay + shutdown grace, the
  Service, PodDisruptionBudget and ServiceMonitor selecting the pods, the autoscaler scaling the
  Deployment on a gauge Sluice exports, a non-root pod;
- each overlay's `sluice.toml` accepted by the real `sluice validate`;
- the Dockerfile's facts (multi-stage, ONNX Runtime from the pinned wheel script, non-root user,
  health check on the readiness route). No image is built here: see the README.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from sluice_support import REPO, sluice_binary

DEPLOY = REPO / "scripts" / "deploy"
OVERLAYS = ["dev", "staging", "prod"]


def render(overlay: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl not found: the deployment manifests are rendered with `kubectl kustomize`", pytrace=False)
    cp = subprocess.run([kubectl, "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
                        capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    return [d for d in yaml.safe_load_all(cp.stdout) if d]


def one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{kind}: {len(found)}"
    return found[0]


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_valid_objects_that_fit_sluice(overlay, tmp_path):
    docs = render(overlay)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service",
                            "ServiceMonitor"]), kinds
    for d in docs:
        if d["kind"] == "ServiceMonitor":
            continue
        kubernetes_validate.validate(d, "1.31.0", strict=True)

    cm, dep, svc = one(docs, "ConfigMap"), one(docs, "Deployment"), one(docs, "Service")
    pdb, hpa, sm = one(docs, "PodDisruptionBudget"), one(docs, "HorizontalPodAutoscaler"), one(docs, "ServiceMonitor")
    namespaces = {d["metadata"].get("namespace") for d in docs}
    assert len(namespaces) == 1 and None not in namespaces, namespaces

    # the config the pods mount, accepted by the real binary (paths of the image made local)
    config_text = cm["data"]["sluice.toml"]
    config = tomllib.loads(config_text)
    local = tmp_path / "sluice.toml"
    local.write_text(config_text.replace("/opt/sluice/models", str(REPO / "models"))
                     .replace("/var/lib/sluice/data", str(tmp_path / "data")))
    cp = subprocess.run([sluice_binary(), "validate", str(local)], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stdout + cp.stderr

    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert selects(dep["spec"]["selector"], labels)
    spec = pod["spec"]
    (c,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == int(config["server"]["http_addr"].rsplit(":", 1)[1])
    assert ports["grpc"] == int(config["server"]["grpc_addr"].rsplit(":", 1)[1])
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    # config mounted where the command line reads it, from this ConfigMap
    args = c["args"]
    assert args[args.index("--config") + 1] == "/etc/sluice/sluice.toml"
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/etc/sluice")
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    # SIGTERM after preStop; then the drain delay, then the shutdown grace: all inside the grace period
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = int(args[args.index("--shutdown-grace-secs") + 1])
    drain = config["server"].get("drain_delay_ms", 0) / 1000
    assert spec["terminationGracePeriodSeconds"] >= float(pre_stop[1]) + drain + grace, spec
    assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    # what selects the pods
    assert selects({"matchLabels": svc["spec"]["selector"]}, labels)
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= set(ports)
    assert selects(pdb["spec"]["selector"], labels)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": dep["metadata"]["name"]}
    assert hpa["spec"]["minReplicas"] == dep["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert f'"{metric}"' in (REPO / "gateway" / "src" / "metrics.rs").read_text(), f"Sluice exports no {metric}"
    # the ServiceMonitor: the fields the Prometheus Operator reads
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert selects(sm["spec"]["selector"], svc["metadata"]["labels"])
    for e in sm["spec"]["endpoints"]:
        assert e["port"] in {p["name"] for p in svc["spec"]["ports"]} and e["path"] == "/metrics", e
        assert re.fullmatch(r"\d+[smh]", e["interval"]), e
    # object storage where the overlay shares tables and config between replicas
    if overlay != "dev":
        assert config["storage"]["tables"].startswith("s3://") and config["storage"]["config_store"].startswith("s3://")


def test_a_typo_in_a_manifest_is_caught():
    """The strict schema check is what catches a misspelt field: it must fail on one."""
    dep = one(render("prod"), "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    c["readinesProbe"] = c.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, "1.31.0", strict=True)


def test_dockerfile_facts():
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
    assert len(stages) >= 2, stages
    assert "scripts/fetch-onnxruntime.sh" in text, "ONNX Runtime comes from the pinned wheel script"
    assert "--locked" in text
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and not user[-1].startswith(("0", "root")), user
    health = re.search(r"^HEALTHCHECK .*\n?.*CMD (.*)$", text, re.M)
    assert health and "/v2/health/ready" in health.group(1), health
    assert re.search(r"^EXPOSE 8000 8001 8002$", text, re.M)
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {"target/", ".venv/"} <= set(ignore)
