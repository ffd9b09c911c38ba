"""The review web app: one page (page.html, no external assets) and a small JSON API, bound to loopback.

GET  /                      the page
GET  /api/state             the sets (for filters and progress) and this reviewer's standing verdicts
GET  /api/set/<set_id>      one set: its members, attribute values, scores, automatic verdicts
GET  /image/<set_id>/<id>   a member's image, or the seed's (id ``src``)
POST /api/verdict           {set_id, member_id (null: the whole set), verdict, reason}: saved at once
POST /api/undo              removes this reviewer's last verdict

Every response forbids framing (``X-Frame-Options`` and CSP ``frame-ancestors``: a hostile page cannot coax key
presses into a framed review page); a body that is not the JSON object described gets 400 with the reason, one
over ``MAX_BODY_BYTES`` 413.
"""

from __future__ import annotations

from importlib import resources

from flask import Flask, Response, abort, jsonify, request
from werkzeug.exceptions import HTTPException

from pipeline.output.storage import Storage
from pipeline.review.catalog import Catalog
from pipeline.review.verdicts import VERDICT_VALUES, ReviewError, VerdictStore, latest

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
MAX_BODY_BYTES = 16 * 1024  # a verdict is a few hundred bytes
SECURITY_HEADERS = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'",
                    "X-Content-Type-Options": "nosniff"}
REASONS = ("attribute not changed", "identity or scene changed", "artifacts or distortion",
           "stereotyped depiction", "offensive or unsafe")


def _verdict_json(row: dict) -> dict:
    return {"set_id": row["set_id"], "member_id": row["member_id"], "verdict": row["verdict"],
            "reason": row["reason"], "time": row["time"].isoformat()}


def create_app(output: str, reviewer: str) -> Flask:
    storage = Storage(output)
    catalog = Catalog(storage)
    store = VerdictStore(storage, reviewer)
    page = resources.files("pipeline.review").joinpath("page.html").read_text(encoding="utf-8")
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    @app.before_request
    def local_only():
        # Bound to loopback, but a web page elsewhere could still post to it, or reach it by DNS rebinding:
        # accept only loopback Host names, and writes only as JSON from this page's origin.
        if request.host.rsplit(":", 1)[0] not in LOOPBACK_NAMES:
            abort(403)
        if request.method == "POST":
            origin = request.headers.get("Origin")
            if not request.is_json or (origin and origin.rstrip("/") != request.host_url.rstrip("/")):
                abort(403)

    @app.after_request
    def no_framing(response):
        response.headers.update(SECURITY_HEADERS)
        return response

    def standing() -> list[dict]:
        return [_verdict_json(row) for row in latest(store.rows()).values()]

    @app.get("/")
    def index():
        return Response(page, mimetype="text/html")

    @app.get("/api/state")
    def state():
        rows = store.rows()
        return jsonify(reviewer=reviewer, output=output, reasons=REASONS, sets=catalog.summaries(),
                       verdicts=standing(), last_set=rows[-1]["set_id"] if rows else None)

    @app.get("/api/set/<set_id>")
    def one_set(set_id: str):
        if set_id not in catalog.sets:
            abort(404)
        return jsonify(catalog.detail(set_id))

    @app.get("/image/<set_id>/<member_id>")
    def image(set_id: str, member_id: str):
        if set_id not in catalog.sets:
            abort(404)
        if member_id != "src" and member_id not in catalog.sets[set_id]["members"]:
            abort(404)
        data = catalog.image(set_id, member_id)
        if data is None:
            abort(404)
        return Response(data, mimetype="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.post("/api/verdict")
    def verdict():
        body = request.get_json(silent=True)
        problem = _verdict_problem(body)
        if problem:
            return jsonify(error=problem), 400
        set_id, member_id = body.get("set_id"), body.get("member_id")
        if set_id not in catalog.sets:
            return jsonify(error=f"unknown set {set_id!r}"), 400
        if member_id is not None and member_id not in catalog.sets[set_id]["members"]:
            return jsonify(error=f"set {set_id} has no member {member_id!r}"), 400
        if body.get("verdict") not in VERDICT_VALUES:
            return jsonify(error=f"verdict must be one of {', '.join(VERDICT_VALUES)}"), 400
        reason = (body.get("reason") or "").strip()[:500] or None
        row = store.add(set_id, member_id, body["verdict"], reason)
        return jsonify(saved=_verdict_json(row), verdicts=standing())

    @app.post("/api/undo")
    def undo():
        row = store.undo()
        return jsonify(undone=_verdict_json(row) if row else None, verdicts=standing())

    @app.errorhandler(ReviewError)
    def review_error(exc):
        return jsonify(error=str(exc)), 400

    @app.errorhandler(HTTPException)
    def http_error(exc):  # 403, 404, 413 ... as JSON with the reason, never an HTML page or a traceback
        return jsonify(error=exc.description), exc.code

    return app


def _verdict_problem(body) -> str | None:
    """What is wrong with a verdict's body (None: its fields have the right types)."""
    if not isinstance(body, dict):
        return "the body must be a JSON object {set_id, member_id, verdict, reason}"
    for name, allowed in (("set_id", (str,)), ("member_id", (str, type(None))), ("verdict", (str,)),
                          ("reason", (str, type(None)))):
        if not isinstance(body.get(name), allowed):
            kind = "text" if allowed == (str,) else "text or null"
            return f"{name} must be {kind}, not {type(body.get(name)).__name__}"
    return None


def make_review_server(output: str, reviewer: str, port: int, host: str = "127.0.0.1"):
    """The review app in a threaded WSGI server listening on ``host:port`` (port 0: any free one)."""
    from werkzeug.serving import make_server

    return make_server(host, port, create_app(output, reviewer), threaded=True)


def serve(output: str, reviewer: str, port: int, host: str = "127.0.0.1", ready=print) -> None:
    """Serve until interrupted; ``ready`` gets the page's URL once the socket listens."""
    server = make_review_server(output, reviewer, port, host)
    ready(f"http://{host}:{server.server_port}/")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
