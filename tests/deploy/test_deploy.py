"""The service's deployment files (docker/), checked without a Docker engine.

Static checks: hadolint on both Dockerfiles, docker-compose's own validation of the
compose file, promtool on the Prometheus config, and the Grafana dashboard's queries
against the metrics the service really exports. Then an integration test that runs
what the serving image runs (the serve extra in a fresh venv, the image's entrypoint
and environment) with a real Prometheus server scraping it on loopback.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
import venv
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from packaging.requirements import Requirement

from service.main import create_app
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "scene-mtl.json"
PROMETHEUS_CONFIG = DOCKER / "prometheus" / "prometheus.yml"
METRIC_NAME = re.compile(r"\bscene_[a-z_]+\b")


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        pending += " " + stripped.removesuffix("\\")
        if not stripped.endswith("\\"):
            keyword, _, arguments = pending.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
            pending = ""
    return instructions


def final_stage(path: Path) -> list[tuple[str, str]]:
    instructions = dockerfile_instructions(path)
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def image_environment(path: Path) -> dict[str, str]:
    """The ``ENV`` values of the final stage (``KEY=value`` pairs)."""
    env: dict[str, str] = {}
    for keyword, arguments in final_stage(path):
        if keyword == "ENV":
            for pair in shlex.split(arguments):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def image_command(path: Path) -> list[str]:
    """ENTRYPOINT followed by CMD of the final stage (exec form)."""
    command: dict[str, list[str]] = {}
    for keyword, arguments in final_stage(path):
        if keyword in ("ENTRYPOINT", "CMD"):
            command[keyword] = json.loads(arguments)
    return command.get("ENTRYPOINT", []) + command.get("CMD", [])


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.train"])
def test_dockerfiles_pass_hadolint(dockerfile: str) -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run([str(hadolint), str(DOCKER / dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_serving_image_runs_scene_serve_without_torch_as_a_user() -> None:
    path = DOCKER / "Dockerfile"
    instructions = dockerfile_instructions(path)
    arguments = {keyword: args for keyword, args in final_stage(path)}
    base = next(args for keyword, args in instructions if keyword == "ARG" and args.startswith("CUDA_IMAGE="))
    # onnxruntime-gpu >= 1.27 (the serve extra's range) is built for CUDA 13 and cuDNN 9.
    assert re.fullmatch(r"CUDA_IMAGE=nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", base)
    # On the image's platform the serve extra installs the GPU build, in that range.
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serve"]
    linux_x86 = {"sys_platform": "linux", "platform_machine": "x86_64"}
    runtimes = [
        requirement
        for requirement in map(Requirement, extra)
        if requirement.name.startswith("onnxruntime")
        and (requirement.marker is None or requirement.marker.evaluate(linux_x86))
    ]
    found = [(r.name, {str(s) for s in r.specifier}) for r in runtimes]
    assert found == [("onnxruntime-gpu", {">=1.27", "<2"})]
    installs = [args for keyword, args in instructions if keyword == "RUN" and "pip install" in args]
    assert installs and all('".[serve]"' in args and "torch" not in args for args in installs)
    # The service and its contract, and nothing of training or the exporter.
    sources = {
        args.split()[0] for keyword, args in instructions if keyword == "COPY" and "--from" not in args
    }
    assert {"scene_contract", "service"} <= sources
    assert not sources & {"training", "model_export", "."}
    assert arguments["USER"].isdigit() and arguments["USER"] != "0"
    assert "/readyz" in arguments["HEALTHCHECK"]
    assert image_command(path)[0] == "scene-serve"
    env = image_environment(path)
    assert env["SCENE_MODEL_PATH"] == "/app/models/default/model.onnx"
    assert any(
        args.endswith("/app/models/default") for keyword, args in final_stage(path) if keyword == "COPY"
    )


def test_the_build_context_leaves_out_environments_and_runs() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    rules = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert rules[0] == "**"  # everything is excluded unless named
    assert "!models/default/" in rules and not any(
        rule.startswith("!.venv") or "runs" in rule for rule in rules
    )


@pytest.fixture(scope="module")
def compose(system_tool: Callable[[str, str], str]) -> Callable[..., dict[str, Any]]:
    binary = system_tool("docker-compose", "docker-compose")

    def config(*files: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        """docker-compose's own validation, then its resolved configuration."""
        command = [binary, "--project-directory", str(DOCKER)]
        for name in files:
            command += ["-f", str(DOCKER / name)]
        result = subprocess.run(
            [*command, "--profile", "cpu", "config"],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
        )
        assert result.returncode == 0, result.stderr
        resolved: dict[str, Any] = yaml.safe_load(result.stdout)
        return resolved

    return config


def test_compose_reserves_a_gpu_and_offers_a_cpu_variant(compose: Callable[..., dict[str, Any]]) -> None:
    services = compose("compose.yaml")["services"]
    assert set(services) == {"scene-mtl", "scene-mtl-cpu", "prometheus", "grafana"}
    gpu = services["scene-mtl"]
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "/readyz" in " ".join(gpu["healthcheck"]["test"])
    cpu = services["scene-mtl-cpu"]
    assert cpu["profiles"] == ["cpu"] and "deploy" not in cpu
    assert cpu["environment"]["SCENE_PROVIDERS"] == "CPUExecutionProvider"
    for service in (gpu, cpu):
        # Prometheus finds either variant, and every replica, under the one DNS name.
        assert "scene-mtl" in service["networks"]["default"]["aliases"]
        assert service["build"]["dockerfile"] == "docker/Dockerfile"
    mounts = " ".join(str(volume) for volume in services["prometheus"]["volumes"])
    assert "prometheus.yml" in mounts
    assert "scene-mtl" not in services["prometheus"].get("depends_on", [])


def test_compose_takes_its_settings_from_the_environment(compose: Callable[..., dict[str, Any]]) -> None:
    env = {"SCENE_HOST_PORTS": "8000-8002", "SCENE_MODEL_PATH": "/models/mine.onnx", "SCENE_GPU_COUNT": "2"}
    services = compose("compose.yaml", env=env)["services"]
    gpu = services["scene-mtl"]
    assert gpu["environment"]["SCENE_MODEL_PATH"] == "/models/mine.onnx"
    assert str(gpu["deploy"]["resources"]["reservations"]["devices"][0]["count"]) == "2"
    assert "8000-8002" in json.dumps(gpu["ports"])


def test_prometheus_config_passes_promtool(system_tool: Callable[[str, str], str]) -> None:
    promtool = system_tool("promtool", "prometheus")
    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus() -> None:
    provisioning = DOCKER / "grafana" / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {panel["datasource"]["uid"] for panel in dashboard["panels"]}
    assert uids == {source["uid"]}
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for topic in ("latency", "throughput", "errors", "batch", "stage", "σ", "provider"):
        assert topic in titles, f"the dashboard has no {topic} panel"


@pytest.mark.anyio
async def test_dashboard_queries_use_only_exported_metrics(
    settings: Settings,
    serve: Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]],
    scene_png: bytes,
) -> None:
    async with serve(create_app(settings)) as client:
        assert (
            await client.post("/predict", content=scene_png, headers={"Content-Type": "image/png"})
        ).is_success
        await client.post("/predict", content=b"junk", headers={"Content-Type": "image/png"})
        exported = set(METRIC_NAME.findall((await client.get("/metrics")).text))
    queries = dashboard_queries()
    assert len(queries) >= 8
    for query in queries:
        used = set(METRIC_NAME.findall(query))
        assert used, f"no scene_ metric in {query!r}"
        assert used <= exported, f"{query!r} uses {used - exported}, which the service does not export"


# --- what the image runs, scraped by a real Prometheus --------------------------------


@pytest.fixture(scope="module")
def serve_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with only the serve extra and only the packages the
    image copies (scene_contract/ and service/), as the image builds it."""
    root = tmp_path_factory.mktemp("serve-venv")
    source = tmp_path_factory.mktemp("serve-src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("scene_contract", "service"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    venv.create(root, with_pip=False)
    # This environment's pip installs into the new one (`--python`), which spares the
    # new one its own copy of pip (ensurepip: seconds, and not what the image runs).
    # Without compiling every installed module to bytecode up front (about a third of the
    # install's time); Python compiles what the server imports when it imports it.
    command = [sys.executable, "-m", "pip", "--python", str(root / "bin" / "python")]
    command += ["install", "--quiet", "--no-compile", f"{source}[serve]"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return root


@pytest.fixture
def prometheus(
    system_tool: Callable[[str, str], str], tmp_path: Path
) -> Callable[[str], AbstractContextManager[str]]:
    """``with prometheus("127.0.0.1:PORT") as api``: a real Prometheus server using the
    repository's scrape config with its targets pointed at the given address."""
    from contextlib import contextmanager

    binary = system_tool("prometheus", "prometheus")

    @contextmanager
    def start(target: str) -> Iterator[str]:
        config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
        [job] = config["scrape_configs"]
        del job["dns_sd_configs"]
        job["static_configs"] = [{"targets": [target]}]
        job["scrape_interval"] = "1s"
        config_path = tmp_path / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        port = free_port()
        log = tmp_path / "prometheus.log"
        with log.open("w") as output:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=output,
                stderr=output,
            )
        api = f"http://127.0.0.1:{port}/api/v1"
        try:
            wait_until(lambda: process.poll() is None and reachable(f"http://127.0.0.1:{port}/-/ready"), log)
            yield api
        finally:
            process.terminate()
            process.wait(timeout=15)

    return start


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def reachable(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def wait_until(condition: Callable[[], bool], log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def query(api: str, promql: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{api}/query", params={"query": promql}, timeout=10)
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_the_image_command_is_scraped_by_prometheus(
    serve_venv: Path,
    model_path: Path,
    prometheus: Callable[[str], AbstractContextManager[str]],
    system_tool: Callable[[str, str], str],
    scene_png: bytes,
    tmp_path: Path,
) -> None:
    # The image's environment holds the service and its contract, not training or torch.
    for absent in ("training", "model_export", "torch"):
        probe = [str(serve_venv / "bin" / "python"), "-c", f"import {absent}"]
        assert subprocess.run(probe, capture_output=True, cwd=tmp_path, timeout=60).returncode != 0, absent
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SCENE_", "PROMETHEUS_"))}
    env |= image_environment(DOCKER / "Dockerfile")
    env |= {
        "PATH": f"{serve_venv / 'bin'}:{env['PATH']}",
        "SCENE_MODEL_PATH": str(model_path),  # a model mounted from the host
        "SCENE_HOST": "127.0.0.1",
        "SCENE_PORT": str(port),
        "SCENE_INTRA_OP_THREADS": "1",
    }
    command = image_command(DOCKER / "Dockerfile")
    log = tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}"
    with log.open("w") as output:
        server = subprocess.Popen(command, env=env, stdout=output, stderr=output, cwd=tmp_path)
    try:
        wait_until(lambda: server.poll() is None and reachable(f"{base}/readyz"), log)
        model = httpx.get(f"{base}/metadata").json()["name"]
        with prometheus(f"127.0.0.1:{port}") as api:

            def scraped(promql: str) -> Callable[[], bool]:
                return lambda: bool(query(api, promql))

            def predict() -> httpx.Response:
                return httpx.post(f"{base}/predict", content=scene_png, headers={"Content-Type": "image/png"})

            # A first request, scraped, so the later ones show up as an increase for rate().
            predict()
            wait_until(scraped('scene_requests_total{route="/predict"}'), log)
            for _ in range(20):
                response = predict()
                assert response.status_code == 200, response.text
            # The image asks for CUDA first; without a GPU it reports the CPU it fell back to.
            provider = response.json()["model"]["execution_provider"]
            assert provider in {"CPUExecutionProvider", "CUDAExecutionProvider"}
            httpx.post(f"{base}/predict", content=b"junk", headers={"Content-Type": "image/png"})
            # Wait for a scrape taken after the junk request, not merely after the 21 good ones.
            wait_until(scraped('scene_requests_total{route="/predict",status_class="2xx"} >= 21'), log)
            wait_until(scraped("scene_errors_total"), log)
            buckets = 'scene_request_duration_seconds_bucket{route="/predict"}'
            [sample] = query(api, f"histogram_quantile(0.95, sum by (le) (rate({buckets}[1m])))")
            p95 = float(sample["value"][1])
            assert math.isfinite(p95) and 0 < p95 < 10
            [info] = query(api, "scene_model_info")
            assert info["metric"]["name"] == model and info["metric"]["provider"] == provider
            [errors] = query(api, "scene_errors_total")
            assert errors["metric"]["reason"] == "corrupt_image"
            tasks = {s["metric"]["task"] for s in query(api, "scene_task_sigma")}
            assert tasks == {"semantic", "instance", "depth"}
            # Every dashboard query is valid PromQL, and all but the error rate (its
            # series began with its only error, so rate() has no increase) find series.
            for promql in dashboard_queries():
                found = query(api, promql.replace("$__rate_interval", "1m"))
                assert found or "scene_errors_total" in promql, promql

        promtool = system_tool("promtool", "prometheus")
        metrics_text = httpx.get(f"{base}/metrics").text
        lint = subprocess.run(
            [promtool, "check", "metrics"], input=metrics_text, capture_output=True, text=True
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr
    finally:
        server.terminate()
        server.wait(timeout=15)
