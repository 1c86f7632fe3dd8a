"""One `APIRouter` per concern; `api_router` includes them all.

Authentication (when ``api_token`` is set) applies to /predict, /metadata,
/v2/models/{name}, /v2/models/{name}/ready and /demo/sample.png; the demo page, health,
readiness, /metrics and the docs stay open so probes and scrapers need no secret.
"""

from fastapi import APIRouter

from service.api.routes import demo, health, metrics, models, predict

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(metrics.router)
api_router.include_router(models.router)
api_router.include_router(predict.router)
api_router.include_router(demo.router)
