"""The dashboard: a static page that speaks the public API with the signed-in key; Plotly's
JavaScript is served from the plotly package, nothing is fetched from outside."""

from pathlib import Path

import plotly
from starlette.responses import FileResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


async def _page(_request) -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


async def _plotly(_request) -> FileResponse:
    return FileResponse(PLOTLY_JS, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})


routes = [
    Route("/dashboard", _page),
    Route("/dashboard/plotly.min.js", _plotly),
    Mount("/dashboard", app=StaticFiles(directory=STATIC), name="dashboard"),
]
