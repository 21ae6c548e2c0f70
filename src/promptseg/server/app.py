"""The HTTP API and the web page: upload an image once, then segment it with clicks and boxes.

`create_app` wires the parts: request schemas (`schemas`), the embedded-image cache (`cache`),
the model's worker (`service`) and the routes (`routes`)."""

from __future__ import annotations

from dataclasses import replace
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from ..model import Sam
from ..predict import FlipPredictor, PromptPredictor, load_predictor
from .routes import router
from .service import ModelService, ServerSettings

__all__ = ["ServerSettings", "create_app"]


def create_app(model: Sam | PromptPredictor, settings: ServerSettings | None = None) -> FastAPI:
    """The app for a model, or a torch predictor (`load_predictor(...)`, mirror-averaging or not)."""
    settings = settings or ServerSettings()
    predictor = _server_predictor(model, settings.flip)
    settings = replace(settings, flip=isinstance(predictor, FlipPredictor))
    svc = ModelService(predictor, settings)
    from .. import __version__

    app = FastAPI(title="promptseg", version=__version__,
                  summary="Segment Anything: upload an image once, then prompt it with points, boxes and masks.")
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.middleware("http")(_bounded(svc))
    static = resources.files("promptseg") / "server" / "static"

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((static / "index.html").read_text(encoding="utf-8"))

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    if settings.web_runtime is not None:
        app.mount("/ort", StaticFiles(directory=str(settings.web_runtime)), name="ort")
    app.include_router(router)
    app.state.service = svc
    app.state.cache = svc.cache
    return app


def _server_predictor(model, flip: bool) -> PromptPredictor:
    if isinstance(model, Sam):
        return load_predictor(model, flip=flip)
    if flip and not isinstance(model, FlipPredictor):
        return FlipPredictor(model)
    return model


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    # field, what was wrong; the offending input is not echoed (it may be huge, or NaN, which JSON cannot carry)
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
    where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
    return JSONResponse({"detail": f"invalid request: {where}", "errors": errors}, status_code=422)


def _bounded(svc: ModelService):
    """Middleware: request bodies bounded by their declared length, and one bad request never
    takes the server down."""
    settings = svc.settings

    async def bound_bodies(request: Request, call_next):
        svc.stats["requests"] += 1
        if request.method == "POST":
            length = request.headers.get("content-length")
            limit = settings.max_upload_bytes + 65536 if request.url.path == "/v1/images" else settings.max_json_bytes
            if length is None:
                return JSONResponse({"detail": "send a Content-Length header"}, status_code=411)
            if not length.isdigit() or int(length) > limit:
                return JSONResponse({"detail": f"request body over {limit} bytes"}, status_code=413)
        try:
            return await call_next(request)
        except Exception as exc:  # one bad request never takes the server down
            return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    return bound_bodies
