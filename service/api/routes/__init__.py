"""One `APIRouter` per concern; `api_router` includes them all.

Authentication (when ``api_token`` is set) applies to /predict, /metadata, the
/v2/models/{name}/... routes and /demo/sample.png; the demo page, health, /v2,
readiness, /metrics and the docs stay open so probes and scrapers need no secret.
"""

from fastapi import APIRouter

from service.api.routes import demo, health, inference, metrics, models, predict

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(metrics.router)
api_router.include_router(models.router)
api_router.include_router(predict.router)
api_router.include_router(inference.router)
api_router.include_router(demo.router)
