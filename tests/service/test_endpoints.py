"""Health, model metadata, KServe v2, OpenAPI docs, bearer-token auth and CORS."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest

from scene_contract.card import ModelCard
from service.main import create_app
from service.settings import Settings

pytestmark = pytest.mark.anyio

Serve = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
TOKEN = "s3cret-token"


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    assert (await client.get("/v2/health/ready")).json() == {"ready": True}
    assert (await client.get("/v2/models/tiny-test/ready")).json() == {"name": "tiny-test", "ready": True}


async def test_metadata_is_the_model_card(client: httpx.AsyncClient, card: ModelCard) -> None:
    response = await client.get("/metadata")
    assert response.status_code == 200
    assert response.json() == card.to_dict()


async def test_v2_model_metadata(client: httpx.AsyncClient, card: ModelCard) -> None:
    body = (await client.get(f"/v2/models/{card.name}")).json()
    assert body["name"] == card.name and body["versions"] == [card.version]
    assert body["platform"] == "onnxruntime"
    size = [card.input.height, card.input.width]
    assert body["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [-1, *size, 3]}]
    assert [o["name"] for o in body["outputs"]] == [
        "semantic",
        "semantic_confidence",
        "instance_offsets",
        "inverse_depth",
    ]


async def test_openapi_documents_the_request_and_response(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    predict = schema["paths"]["/predict"]["post"]
    assert set(predict["requestBody"]["content"]) == {
        "multipart/form-data",
        "image/png",
        "image/jpeg",
        "image/webp",
    }
    ok = predict["responses"]["200"]["content"]
    assert "application/x-npz" in ok
    assert ok["application/json"]["schema"]["$ref"].endswith("/PredictResponse")
    assert {"413", "415", "503", "504"} <= set(predict["responses"])
    instance = schema["components"]["schemas"]["InstanceItem"]["properties"]
    assert "class" in instance and "class_name" not in instance
    assert {"/healthz", "/readyz", "/metrics", "/metadata", "/v2", "/v2/models/{name}"} <= set(
        schema["paths"]
    )
    infer = schema["paths"]["/v2/models/{name}/infer"]["post"]
    assert {"application/json", "application/octet-stream"} <= set(infer["requestBody"]["content"])
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


@pytest.fixture
async def guarded(make_settings: Callable[..., Settings], serve: Serve) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(create_app(make_settings(api_token=TOKEN))) as client:
        yield client


@pytest.mark.parametrize(
    "path",
    [
        "/metadata",
        "/v2/models/tiny-test",
        "/v2/models/tiny-test/ready",
        "/v2/models/tiny-test/versions/0.0.1",
    ],
)
async def test_token_guards_model_endpoints(guarded: httpx.AsyncClient, path: str) -> None:
    missing = await guarded.get(path)
    error = missing.json()["error"]
    # The open inference protocol's errors are a message alone; the service's have a code.
    assert missing.status_code == 401 and (error["code"] == "unauthorized" if path == "/metadata" else error)
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = await guarded.get(path, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert (await guarded.get(path, headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200


@pytest.mark.parametrize("path", ["/v2/models/other/ready", "/v2/models/other"])
async def test_an_unknown_model_name_does_not_learn_the_served_one(
    guarded: httpx.AsyncClient, path: str
) -> None:
    response = await guarded.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 404 and response.json() == {"error": "no model named 'other' here"}
    assert "tiny-test" not in response.text


async def test_openapi_declares_bearer_auth_only_when_a_token_is_set(
    client: httpx.AsyncClient, guarded: httpx.AsyncClient
) -> None:
    open_schema = (await client.get("/openapi.json")).json()
    assert "securitySchemes" not in open_schema.get("components", {})
    operations = [op for path in open_schema["paths"].values() for op in path.values()]
    assert not [op for op in operations if "security" in op or "401" in op["responses"]]
    guarded_schema = (await guarded.get("/openapi.json")).json()
    assert guarded_schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    predict = guarded_schema["paths"]["/predict"]["post"]
    assert predict["security"] == [{"HTTPBearer": []}] and "401" in predict["responses"]


async def test_token_guards_predict(guarded: httpx.AsyncClient, scene_png: bytes) -> None:
    headers = {"Content-Type": "image/png"}
    assert (await guarded.post("/predict", content=scene_png, headers=headers)).status_code == 401
    authorised = headers | {"Authorization": f"Bearer {TOKEN}"}
    assert (await guarded.post("/predict", content=scene_png, headers=authorised)).status_code == 200


@pytest.mark.parametrize(
    "path", ["/healthz", "/readyz", "/v2", "/v2/health/live", "/v2/health/ready", "/metrics", "/openapi.json"]
)
async def test_probes_metrics_and_docs_need_no_token(guarded: httpx.AsyncClient, path: str) -> None:
    assert (await guarded.get(path)).status_code == 200


async def test_cors_allows_configured_origins_only(
    make_settings: Callable[..., Settings], serve: Serve
) -> None:
    app = create_app(make_settings(cors_origins=["https://ui.example"]))
    async with serve(app) as client:
        preflight = {"Access-Control-Request-Method": "POST"}
        allowed = await client.options("/predict", headers=preflight | {"Origin": "https://ui.example"})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://ui.example"
        other = await client.options("/predict", headers=preflight | {"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
