"""The HTTP API and the web page: upload an image once, then segment it with clicks and boxes.

`create_app` wires the parts: request schemas (`schemas`), the embedded-image cache (`cache`),
the model's worker (`service`) and the routes (`routes`)."""

from __future__ import annotations

from dataclasses import replace
from importlib import resources

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from ..model import Sam
from ..predict import FlipPredictor, PromptPredictor, load_predictor
from .routes import router, text_router
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
    app.add_middleware(_Bounded, svc=svc)
    static = resources.files("promptseg") / "server" / "static"

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((static / "index.html").read_text(encoding="utf-8"))

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    if settings.web_runtime is not None:
        app.mount("/ort", StaticFiles(directory=str(settings.web_runtime)), name="ort")
    app.include_router(router)
    if svc.detector is not None:
        app.include_router(text_router)
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


class _Bounded:
    """Pure ASGI middleware (a BaseHTTPMiddleware would hide a client's disconnect from the
    routes): request bodies bounded by their declared length, an upload's bytes held against the
    memory budget before its body is read, and one bad request never takes the server down."""

    def __init__(self, app, svc: ModelService) -> None:
        self.app = app
        self.svc = svc

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        svc, settings = self.svc, self.svc.settings
        svc.stats["requests"] += 1
        held = 0
        if scope["method"] == "POST":
            length = dict(scope["headers"]).get(b"content-length", b"").decode("latin-1")
            upload = scope["path"] == "/v1/images"
            limit = settings.max_upload_bytes + 65536 if upload else settings.max_json_bytes
            if not length:
                return await JSONResponse({"detail": "send a Content-Length header"}, 411)(scope, receive, send)
            if not length.isdigit() or int(length) > limit:
                return await JSONResponse({"detail": f"request body over {limit} bytes"}, 413)(scope, receive, send)
            held = int(length) if upload else 0  # an upload's bytes count against the memory budget
        started = False

        async def tracked_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            with svc.memory.reserve(held, "the upload"):
                await self.app(scope, receive, tracked_send)
        except HTTPException as exc:  # the budget is full: refused before the body is read
            await JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)(scope, receive, send)
        except Exception as exc:  # one bad request never takes the server down
            if started:
                raise
            body = {"detail": f"internal error: {type(exc).__name__}: {exc}"}
            await JSONResponse(body, 500)(scope, receive, send)
