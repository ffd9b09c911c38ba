"""The review server on loopback, spoken to over real HTTP: it cannot be framed, and a malformed or oversized body
gets a 400 or 413 with the reason, never a 500 with a traceback."""

from __future__ import annotations

import http.client
import json
import threading

import pytest

from pipeline.review.server import MAX_BODY_BYTES, make_review_server
from tests.helpers import set_row, write_sets


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    out = tmp_path_factory.mktemp("review-server") / "out"
    write_sets(out, [set_row(0, "accepted")], 0)  # one gender set: s0-gender, members male and female
    running = make_review_server(str(out), "ann", 0)
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    yield running.server_port, out
    running.shutdown()
    thread.join()


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    sent = {"Content-Type": "application/json", **(headers or {})} if body is not None else dict(headers or {})
    connection.request(method, path, body=body, headers=sent)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response, data


@pytest.mark.parametrize("path", ["/", "/api/state", "/api/set/s0-gender", "/api/set/nope"])
def test_every_response_forbids_framing(server, path):
    response, _ = request(server[0], "GET", path)
    assert response.getheader("X-Frame-Options") == "DENY"
    assert "frame-ancestors 'none'" in response.getheader("Content-Security-Policy")


@pytest.mark.parametrize("body, reason", [
    (b"[1]", "the body must be a JSON object"),
    (b'"text"', "the body must be a JSON object"),
    (b"{not json", "the body must be a JSON object"),
    (b'{"set_id": ["s0-gender"], "verdict": "reject"}', "set_id must be text, not list"),
    (b'{"set_id": {"a": 1}, "verdict": "reject"}', "set_id must be text, not dict"),
    (b'{"set_id": "s0-gender", "member_id": 3, "verdict": "reject"}', "member_id must be text or null, not int"),
    (b'{"set_id": "s0-gender", "verdict": "reject", "reason": 7}', "reason must be text or null, not int"),
    (b'{"set_id": "s0-gender", "verdict": ["reject"]}', "verdict must be text, not list"),
    (b'{"set_id": "s0-gender", "verdict": "maybe"}', "verdict must be one of accept, reject"),
])
def test_a_malformed_verdict_gets_400_with_the_reason(server, body, reason):
    port, out = server
    response, data = request(port, "POST", "/api/verdict", body)
    assert response.status == 400, data
    assert reason in json.loads(data)["error"]
    assert not (out / "reviews" / "ann.parquet").exists()


def test_an_oversized_body_gets_413_and_a_good_verdict_is_still_saved(server):
    port, out = server
    big = json.dumps({"set_id": "s0-gender", "verdict": "reject", "reason": "x" * MAX_BODY_BYTES}).encode()
    response, data = request(port, "POST", "/api/verdict", big)
    assert response.status == 413 and "error" in json.loads(data)
    good = json.dumps({"set_id": "s0-gender", "member_id": "male", "verdict": "reject", "reason": "blurry"}).encode()
    response, data = request(port, "POST", "/api/verdict", good)
    assert response.status == 200, data
    assert json.loads(data)["saved"]["reason"] == "blurry"
    response, data = request(port, "POST", "/api/undo", b"[1]")  # undo takes no body: whatever it is, ignored
    assert response.status == 200 and json.loads(data)["undone"]["member_id"] == "male"
