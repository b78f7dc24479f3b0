"""A REST request for a model version scaled to zero: answered once the version is
loaded again (``servion.serving.sleep``), off the hot path of loaded models."""

from __future__ import annotations

from typing import TYPE_CHECKING

from servion.protocol import http_status_for
from servion.server.answers import Done, encoded
from servion.server.http import Request, Response
from servion.serving.sleep import obtain

if TYPE_CHECKING:
    from servion.server.app import ServionApp
    from servion.server.tracing import RequestTrace


async def woken(
    app: ServionApp,
    req: Request,
    name: str,
    version: str | None,
    done: Done | None,
    trace: RequestTrace | None,
) -> Response:
    """The answer, after the version's load; ``done`` hears a failure's status."""
    try:
        model = await obtain(app.manager, name, version)
        request = app.decode(req)
    except BaseException as exc:
        if done is not None:
            done(http_status_for(exc)[0])
        raise
    answer = app.plane.infer_model(model, request)
    response = encoded(answer, request, req, app.guard, done, trace)
    return response if isinstance(response, tuple) else await response
