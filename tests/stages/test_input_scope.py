"""A parquet list names only paths on its own filesystem, or under input.allow_paths: a list on a bucket that
names local files, a metadata URL or a device gets an error row for each, naming the path, and nothing of
them is read (a real S3 server, moto's, and a real HTTP server on loopback that counts what it is asked)."""

import http.server
import io
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config.errors import ConfigError
from pipeline.config.loading import load_config
from stages.ingest.config import IngestConfig
from stages.ingest.decode import DecodeSeeds
from stages.ingest.listing import list_seeds
from tests.conftest import REPO
from tests.helpers import png_bytes

OUTSIDE = "is outside what this list may name"


@pytest.fixture(scope="module")
def web_server():
    """A loopback HTTP server serving a PNG at any path, and the paths it was asked for."""
    asked = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            body = png_bytes(32, 32)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", asked
    server.shutdown()


@pytest.fixture
def web(web_server):
    web_server[1].clear()
    return web_server


@pytest.fixture(scope="module")
def bucket(s3_endpoint):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    for name in ("lists", "images"):
        s3.create_bucket(Bucket=name)
    s3.put_object(Bucket="lists", Key="run/img.png", Body=png_bytes(32, 32, (10, 20, 30)))
    s3.put_object(Bucket="images", Key="b.png", Body=png_bytes(32, 32, (40, 50, 60)))
    s3.put_object(Bucket="lists", Key="run/large.png", Body=png_bytes(300, 300))
    return s3


def put_list(s3, key: str, paths: list) -> str:
    out = io.BytesIO()
    pq.write_table(pa.table({"path": paths}), out)
    s3.put_object(Bucket="lists", Key=key, Body=out.getvalue())
    return f"s3://lists/{key}"


def decode(config: IngestConfig) -> list[dict]:
    return DecodeSeeds(config)(list_seeds(config, seeds_per_shard=100)).to_pylist()


def test_a_list_on_a_bucket_reads_its_own_objects_and_refuses_everything_else(bucket, web, tmp_path):
    base, asked = web
    local = tmp_path / "local.png"
    local.write_bytes(png_bytes(32, 32))
    paths = ["img.png", "s3://images/b.png", "/etc/hostname", "file:///etc/passwd",
             f"{base}/latest/meta-data/iam", "/dev/zero", str(local), "s3://lists/run/img.png::" + base + "/x"]
    rows = decode(IngestConfig(kind="parquet", path=put_list(bucket, "run/seeds.parquet", paths)))
    assert [r["status"] for r in rows] == ["ok", "ok"] + ["error"] * 6
    assert rows[0]["source_uri"] == "s3://lists/run/img.png"
    for row, path in zip(rows[2:7], paths[2:7]):
        assert row["error"] == (f"ingest: path {path} {OUTSIDE} (paths on its own filesystem, s3://); "
                                "add a root above it to input.allow_paths to read it"), row["error"]
    assert "chained URL" in rows[7]["error"] and rows[7]["source_uri"] == paths[7]
    assert asked == []  # the metadata URL was never requested


def test_allow_paths_names_other_roots_and_nothing_beside_them(bucket, web, tmp_path):
    base, asked = web
    (tmp_path / "allowed").mkdir()
    (tmp_path / "allowed" / "a.png").write_bytes(png_bytes(32, 32, (1, 1, 1)))
    (tmp_path / "allowed-not").mkdir()
    (tmp_path / "allowed-not" / "b.png").write_bytes(png_bytes(32, 32, (2, 2, 2)))
    (tmp_path / "allowed" / "out").symlink_to(tmp_path / "allowed-not")
    paths = [str(tmp_path / "allowed" / "a.png"), str(tmp_path / "allowed-not" / "b.png"),
             str(tmp_path / "allowed" / ".." / "allowed-not" / "b.png"), str(tmp_path / "allowed" / "out" / "b.png"),
             f"{base}/ok.png", f"{base}x/no.png"]
    config = IngestConfig(kind="parquet", path=put_list(bucket, "run/allow.parquet", paths),
                          allow_paths=[str(tmp_path / "allowed"), f"{base}/"])
    rows = decode(config)
    assert [r["status"] for r in rows] == ["ok", "error", "error", "error", "ok", "error"], [r["error"] for r in rows]
    assert all(OUTSIDE in r["error"] for r in (rows[1], rows[2], rows[3], rows[5]))
    assert set(asked) == {"/ok.png"}  # fsspec asks for its size, then its bytes


def test_a_local_list_reads_local_paths_anywhere_but_no_url(web, tmp_path):
    base, asked = web
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a.png").write_bytes(png_bytes(32, 32))
    (tmp_path / "lists").mkdir()
    pq.write_table(pa.table({"path": [str(elsewhere / "a.png"), f"file://{elsewhere}/a.png", f"{base}/a.png"]}),
                   tmp_path / "lists" / "seeds.parquet")
    rows = decode(IngestConfig(kind="parquet", path=str(tmp_path / "lists" / "seeds.parquet")))
    assert [r["status"] for r in rows] == ["ok", "ok", "error"]
    assert f"path {base}/a.png {OUTSIDE} (paths on its own filesystem, file://)" in rows[2]["error"]
    assert asked == []


def test_an_object_over_max_bytes_is_refused_from_its_size(bucket):
    """A limit between the two PNGs' sizes: the larger is refused from the size the folder listing or the
    object's info (a list) gives; the smaller is read."""
    small, large = len(png_bytes(32, 32, (10, 20, 30))), len(png_bytes(300, 300))
    limit = (small + large) // 2
    assert small < limit < large
    listed = put_list(bucket, "run/sizes.parquet", ["img.png", "large.png"])
    for config in (IngestConfig(kind="parquet", path=listed, max_bytes=limit),
                   IngestConfig(kind="folder", path="s3://lists/run/", max_bytes=limit)):
        rows = {r["source_uri"].rsplit("/", 1)[1]: r for r in decode(config)}
        assert rows["img.png"]["status"] == "ok"
        assert rows["large.png"]["error"] == f"ingest: input is {large} bytes, over input.max_bytes={limit}"


@pytest.mark.parametrize("field, value, message", [
    ("input.max_bytes", 0, "must be >= 1"),
    ("input.max_pixels", 89_478_486, "must be at most 89478485"),
    ("input.allow_paths", ["images/"], "must be an absolute path or a URI"),
    ("input.allow_paths", ["zip://a::s3://b/c"], "not a chained URL"),
])
def test_the_new_input_settings_are_checked_when_the_config_loads(field, value, message):
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "configs" / "mini.yaml", {field: value})
    assert field.split(".")[1] in err.value.field and message in err.value.message


def test_what_counts_as_a_list_s_own_filesystem():
    from stages.ingest.scope import ListScope

    on_web = ListScope("https://data.example/lists/seeds.parquet")
    assert on_web.problem("https://data.example/img/a.jpg") is None
    assert on_web.problem("http://data.example/img/a.jpg") is None  # the same host over http
    for elsewhere in ("https://data.example.evil/a.jpg", "https://user@169.254.169.254/a.jpg", "s3://b/a.jpg"):
        assert OUTSIDE in on_web.problem(elsewhere), elsewhere
    on_s3 = ListScope("s3://lists/seeds.parquet", ["/data/images/"])
    assert on_s3.problem("s3a://other/a.jpg") is None  # s3a is s3
    assert on_s3.problem("/data/images/a.jpg") is None and on_s3.problem("file:///data/images/a.jpg") is None
    for elsewhere in ("/data/images-2/a.jpg", "/data/images/../secret.jpg", "gs://b/a.jpg", "memory://a.jpg"):
        assert OUTSIDE in on_s3.problem(elsewhere), elsewhere
