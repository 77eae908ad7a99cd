"""The HTTP API and the page: a FastAPI app over one `SearchService`, described by its own OpenAPI schema.

Every client error is a 4xx with a JSON body `{"error": "one line naming what was wrong"}`.
"""


from importlib import resources
from typing import Any

from .. import __version__
from ..errors import require
from .service import RequestError, SearchRequest, SearchService
from .uploads import UploadFolder, UploadLimits, UploadRefused, checked_image, read_limited


def create_app(service: SearchService, limits: UploadLimits = UploadLimits()):
    """The ASGI app: JSON API under /api, the page at /, its files under /static."""
    require("fastapi", "serve", "fastapi")
    from contextlib import asynccontextmanager

    from fastapi import Body, FastAPI, File, Form, Query, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from pydantic import BaseModel, Field

    static = resources.files("cir.serve") / "static"
    uploads = UploadFolder()
    @asynccontextmanager
    async def lifespan(_):
        yield
        uploads.close()

    app = FastAPI(title="cir", version=__version__, lifespan=lifespan, description="Two-stage composed image "
                  "retrieval: search a gallery with a reference image and a modification text.")

    class SearchBody(BaseModel):
        reference: str = Field(description="a gallery image id")
        text: str = Field(description="the modification to apply to the reference")
        k: int = Field(10, description="results to return")
        query_id: str | None = Field(None, description="a benchmark query id: its ground truth is marked")

    class RerankBody(BaseModel):
        reference: str = Field(description="a gallery image id")
        text: str
        candidates: list[str] = Field(description="gallery image ids, in their stage-one order")

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, exc: RequestError):
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(UploadRefused)
    async def _refused(_: Request, exc: UploadRefused):
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        what = f"{request.method} {request.url.path}"
        message = f"{what}: no such endpoint (see /docs)" if exc.status_code == 404 else f"{what}: {exc.detail}"
        return JSONResponse({"error": message}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "request"
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, status_code=422)

    @app.get("/api/health", summary="liveness")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/info", summary="model, weights, gallery, index and stages")
    def info() -> dict[str, Any]:
        return service.info()

    @app.get("/api/gallery", summary="gallery image ids, a page at a time or a random sample")
    def gallery(offset: int = Query(0, ge=0), limit: int = Query(48, ge=1, le=500), random: bool = False,
                seed: int | None = None) -> dict[str, Any]:
        return service.gallery_page(offset, limit, random, seed)

    @app.get("/api/image/{image_id}", summary="a gallery image (PNG), or its thumbnail",
             responses={200: {"content": {"image/png": {}}}})
    def image(image_id: str, thumbnail: bool = False):
        data, media = service.image_bytes(image_id, thumbnail)
        return Response(data, media_type=media, headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/query/{query_id}", summary="a benchmark query: reference, text, targets, img_set members")
    def benchmark_query(query_id: str) -> dict[str, Any]:
        return service.benchmark_query(query_id)

    @app.post("/api/search", summary="composed search from a gallery image")
    def search(body: SearchBody) -> dict[str, Any]:
        service.image_id(body.reference)
        return service.search(SearchRequest(body.reference, body.text, body.k, body.query_id))

    @app.post("/api/search/upload", summary="composed search from an uploaded reference image")
    def search_upload(image: UploadFile = File(...), text: str = Form(...), k: int = Form(10)) -> dict[str, Any]:
        what = f"upload {image.filename!r}" if image.filename else "the upload"
        data = read_limited(image.file, limits.max_bytes, what)
        checked_image(data, limits, what)
        path = uploads.save(data)
        try:
            return service.search(SearchRequest(str(path), text, k))
        finally:
            path.unlink(missing_ok=True)

    @app.post("/api/rerank", summary="stage two over a candidate list from anywhere")
    def rerank(body: RerankBody = Body(...)) -> dict[str, Any]:
        return service.rerank(service.image_id(body.reference), body.text, body.candidates)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(str(static / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    return app
