"""The explorer's HTTP API, in process (Starlette's TestClient) and as a real server:
what each endpoint returns against the store and the runtime, and every bad request a
JSON 4xx. The page itself is tested in a real browser in test_explore_page.py."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from tests.helpers import EXPORTED, ROOT, run_cli  # noqa: E402
from vaefast import data, runtime  # noqa: E402
from vaefast.embedding import store
from vaefast.embedding.pipeline import embed  # noqa: E402
from vaefast.errors import VaefastError  # noqa: E402
from vaefast.explore import app, auth, serve  # noqa: E402
from vaefast.explore.columns import FRAME_MARGIN, Columns  # noqa: E402

Z20, Z2 = EXPORTED / "mnist5k-z20", EXPORTED / "mnist5k-z2"
N = 400


def _inputs(folder, n=N):
    raw = data.read("mnist5k")
    pick = np.arange(n) * (len(raw.X) // n)  # every class
    np.savez(folder / "x.npz", X=raw.X[pick], y=raw.y[pick])
    return raw.X[pick], raw.y[pick]


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A finished store of N mnist5k digits through the z20 model, with its t-SNE."""
    folder = tmp_path_factory.mktemp("explore")
    X, y = _inputs(folder)
    embed(Z20, str(folder / "x.npz"), folder / "e.zarr", tsne=True, progress=False)
    return folder, X, y


@pytest.fixture(scope="module")
def vae():
    return runtime.load(Z20, providers="cpu")


@pytest.fixture(scope="module")
def explorer(stored, vae):
    folder, _, _ = stored
    ex = app.Explorer(vae, Columns(folder / "e.zarr", vae.meta["weights_sha256"], str(Z20)))
    yield ex
    ex.decoder.close()


@pytest.fixture(scope="module")
def client(explorer):
    with TestClient(
        app.build(explorer), raise_server_exceptions=False, base_url="http://127.0.0.1"
    ) as c:
        yield c


def _png(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)))


def _points(content: bytes) -> dict[str, np.ndarray]:
    k = int(np.frombuffer(content[:4], "<u4")[0])
    out, at = {}, 4
    for name, dtype in (
        ("rows", "<u4"),
        ("x", "<f4"),
        ("y", "<f4"),
        ("label", "<i2"),
        ("sigma", "<u2"),
    ):
        size = np.dtype(dtype).itemsize * k
        out[name] = np.frombuffer(content[at : at + size], dtype)
        at += size
    assert at == len(content) == 4 + 16 * k  # 16 bytes a point
    return out


def test_points_are_the_stores_map_normalised_with_labels_and_mean_sigma(client, stored):
    folder, _, y = stored
    g = store.open_embeddings(folder / "e.zarr")
    pts = _points(client.get("/api/points?map=tsne").content)
    np.testing.assert_array_equal(pts["rows"], np.arange(N))
    tsne = np.asarray(g["tsne"][:], np.float64)
    lo, hi = tsne.min(axis=0), tsne.max(axis=0)
    expected = (tsne - (lo + hi) / 2) / (np.max(hi - lo) / 2 * FRAME_MARGIN)
    np.testing.assert_allclose(np.c_[pts["x"], pts["y"]], expected, atol=1e-6)
    assert np.abs(np.c_[pts["x"], pts["y"]]).max() == pytest.approx(1 / FRAME_MARGIN)
    np.testing.assert_array_equal(pts["label"], y)
    sigma = np.exp(0.5 * np.asarray(g["logvar"][:], np.float64)).mean(axis=1)
    scaled = (sigma - sigma.min()) / (sigma.max() - sigma.min())
    np.testing.assert_allclose(pts["sigma"] / 65535, scaled, atol=1 / 65535 + 1e-6)


def test_a_view_sends_the_first_rows_of_the_seeded_sample_inside_its_box(client):
    xy = _points(client.get("/api/points").content)
    box = dict(x0=-0.5, y0=-0.6, x1=0.7, y1=0.4)
    inside = np.flatnonzero(
        (xy["x"] >= -0.5) & (xy["x"] <= 0.7) & (xy["y"] >= -0.6) & (xy["y"] <= 0.4)
    )
    small = client.get("/api/points", params=box | {"limit": 20})
    large = client.get("/api/points", params=box | {"limit": 60})
    assert int(small.headers["X-Total-Rows"]) == len(inside) > 60
    rows_small, rows_large = _points(small.content)["rows"], _points(large.content)["rows"]
    assert len(rows_small) == 20 and len(rows_large) == 60
    assert set(rows_small) <= set(rows_large) <= set(inside)  # zooming in only adds rows
    assert client.get("/api/points", params=box | {"limit": 20}).content == small.content


def test_hover_images_are_the_input_and_the_runtimes_reconstruction(client, stored, vae):
    _, X, _ = stored
    for r in (0, 17, N - 1):
        np.testing.assert_array_equal(
            _png(client.get(f"/api/rows/{r}/input.png").content), X[r].reshape(28, 28)
        )
        recon = _png(client.get(f"/api/rows/{r}/reconstruction.png").content)
        mu = client.get(f"/api/rows/{r}").json()["mu"]
        expected = vae.decode(np.asarray([mu], np.float32))[0].reshape(28, 28)
        np.testing.assert_array_equal(recon, (np.clip(expected, 0, 1) * 255 + 0.5).astype(np.uint8))


def test_samples_are_decodes_of_mu_plus_sigma_times_seeded_noise(client, vae):
    info = client.get("/api/rows/5").json()
    strip = _png(client.get("/api/rows/5/samples.png?n=8&seed=3").content)
    assert strip.shape == (28, 8 * 28)
    eps = np.random.default_rng(3).standard_normal((8, 20)).astype(np.float32)
    z = np.float32(info["mu"]) + np.float32(info["sigma"]) * eps
    expected = vae.decode(z).reshape(8, 28, 28)
    got = strip.reshape(28, 8, 28).transpose(1, 0, 2)
    np.testing.assert_array_equal(got, (np.clip(expected, 0, 1) * 255 + 0.5).astype(np.uint8))
    assert not np.array_equal(strip, _png(client.get("/api/rows/5/samples.png?n=8&seed=4").content))


def test_neighbours_in_mu_and_in_the_map_are_the_exact_nearest(client, stored):
    folder, _, _ = stored
    g = store.open_embeddings(folder / "e.zarr")
    mu = np.asarray(g["mu"][:], np.float64)
    xy = _points(client.get("/api/points").content)
    got = client.get("/api/rows/7/neighbours?k=6").json()
    d = ((mu - mu[7]) ** 2).sum(axis=1)
    d[7] = np.inf
    assert got["latent"] == np.argsort(d, kind="stable")[:6].tolist()
    pos = np.c_[xy["x"], xy["y"]].astype(np.float64)
    d = ((pos - pos[7]) ** 2).sum(axis=1)
    d[7] = np.inf
    assert got["map"] == np.argsort(d, kind="stable")[:6].tolist()


def test_decode_equals_the_runtime_and_refuses_bad_latents(client, vae):
    z = np.random.default_rng(0).standard_normal((3, 20)).astype(np.float32)
    strip = _png(client.post("/api/decode", json={"z": z.tolist()}).content)
    expected = vae.decode(z).reshape(3, 28, 28)
    got = strip.reshape(28, 3, 28).transpose(1, 0, 2)
    np.testing.assert_array_equal(got, (np.clip(expected, 0, 1) * 255 + 0.5).astype(np.uint8))
    for body in (
        {"z": [[0.0] * 19]},
        {"z": [[0.0] * 20] * 65},
        {"z": []},
        {"z": "x"},
        {"z": [[None] * 20]},
        [1],
    ):
        r = client.post("/api/decode", json=body)
        assert r.status_code == 400 and "error" in r.json()
    r = client.post("/api/decode", content=b'{"z": [[NaN' + b", 0" * 19 + b"]]}")
    assert r.status_code == 400
    r = client.post("/api/decode", content=b"x" * (app.JSON_BODY_BYTES + 1))
    assert r.status_code == 413


def test_selection_reports_count_labels_and_mean_sigma_and_downloads_ids(client, stored, explorer):
    _, _, y = stored
    rows = np.array([3, 1, 200, 3, 399], "<u4")
    stats = client.post("/api/selection", content=rows.tobytes()).json()
    unique = np.unique(rows)
    assert stats["count"] == 4
    assert stats["labels"] == {str(v): int((y[unique] == v).sum()) for v in np.unique(y[unique])}
    assert stats["sigma_mean"] == pytest.approx(float(explorer.cols.sigma_mean[unique].mean()))
    text = client.post("/api/selection?format=csv", content=rows.tobytes()).text
    assert text.splitlines() == ["row,id,label"] + [f"{r},,{y[r]}" for r in unique]
    assert client.post("/api/selection", content=b"abc").status_code == 400
    assert client.post("/api/selection", content=np.array([N], "<u4").tobytes()).status_code == 400
    assert client.post("/api/selection?format=xls", content=rows.tobytes()).status_code == 400


def test_a_selection_downloads_as_parquet_in_the_exports_vocabulary(client, stored, tmp_path):
    """The selected rows as `vaefast embeddings --to parquet` writes every row: row, id,
    label and label_name, μ and log σ² as the store holds them, the map's position."""
    import pyarrow.parquet as pq

    from vaefast.embedding.store import export

    folder, _, y = stored
    rows = np.array([399, 3, 1, 200, 3], "<u4")
    r = client.post("/api/selection?format=parquet", content=rows.tobytes())
    assert r.status_code == 200
    (tmp_path / "sel.parquet").write_bytes(r.content)
    picked = pq.read_table(tmp_path / "sel.parquet").to_pandas()
    export(folder / "e.zarr", "parquet", tmp_path / "all.parquet")
    whole = pq.read_table(tmp_path / "all.parquet").to_pandas()
    expected = whole.iloc[np.unique(rows)].reset_index(drop=True)
    assert list(picked.columns) == list(whole.columns)
    assert picked["row"].tolist() == [1, 3, 200, 399] and picked["label"].tolist() == list(
        y[[1, 3, 200, 399]]
    )
    for name in ("mu", "logvar"):
        np.testing.assert_array_equal(np.stack(picked[name]), np.stack(expected[name]))
    empty = client.post("/api/selection?format=parquet", content=b"")
    assert empty.status_code == 400 and "no rows" in empty.json()["error"]


def test_search_finds_rows_by_label_and_without_ids_by_row_number(client, stored):
    _, _, y = stored
    expected = sorted({*np.flatnonzero(y == 7).tolist(), 7})
    assert client.get("/api/search?q=7").json()["rows"] == expected
    assert client.get("/api/search?q=350").json()["rows"] == [350]
    assert client.get("/api/search?q=nothing").json()["rows"] == []


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(
        [
            "/api/rows/{}",
            "/api/rows/{}/input.png",
            "/api/rows/{}/reconstruction.png",
            "/api/rows/{}/samples.png",
            "/api/rows/{}/neighbours",
            "/api/points",
            "/api/dimension",
            "/api/search",
            "/api/rows/{}/sigma.png",
            "/api/{}",
            "/{}",
        ]
    ),
    value=st.one_of(st.integers(-(2**40), 2**40).map(str), st.text(max_size=12)),
    key=st.sampled_from(["k", "n", "seed", "limit", "map", "x0", "dim", "q", "format"]),
)
@example(path="/api/rows/{}/reconstruction.png", value="¹", key="k")  # isdigit, not int
@example(path="/api/search", value="¹", key="q")
@example(path="/api/search", value="--5", key="q")  # a label number's "-", twice
def test_any_malformed_request_is_a_json_4xx_never_a_500(client, path, value, key):
    from urllib.parse import quote

    r = client.get(path.format(quote(value, safe="")), params={key: value})
    assert r.status_code < 500, (path, key, value, r.text)
    if r.status_code >= 400:
        assert "error" in r.json()
    for partial in ("x0=0", "x0=0&y0=0&x1=inf&y1=1", "limit=99999999999"):
        assert client.get(f"/api/points?{partial}").status_code == 400


def test_a_token_is_needed_off_loopback_and_the_host_is_checked_on_it(explorer):
    assert auth.token_for("127.0.0.1", None) is None and auth.token_for("::1", None) is None
    token = auth.token_for("0.0.0.0", None)
    assert token and len(token) >= 24 and auth.token_for("0.0.0.0", None) != token
    guarded = auth.Guard(app.build(explorer), token)
    with TestClient(guarded, base_url="http://10.0.0.5") as c:
        refused = c.get("/api/meta")
        assert refused.status_code == 403 and refused.json() == {"error": "missing or wrong token"}
        assert c.get("/api/meta?token=wrong").status_code == 403
        first = c.get(f"/?token={token}")
        assert first.status_code == 200 and auth.cookie_name(token) in first.headers["set-cookie"]
        assert c.get("/api/meta").status_code == 200  # the cookie, as the page's fetches send it
    with TestClient(guarded, base_url="http://10.0.0.5") as c:
        assert c.get("/api/meta", headers={"Authorization": f"token {token}"}).status_code == 200
    local = auth.Guard(app.build(explorer), None)
    with TestClient(local, base_url="http://127.0.0.1:8000") as c:
        assert c.get("/api/meta").status_code == 200
        assert c.get("/api/meta", headers={"host": "localhost:8000"}).status_code == 200
        assert c.get("/api/meta", headers={"host": "attacker.example:8000"}).status_code == 403


def test_two_guarded_servers_on_one_host_keep_their_own_cookies(explorer):
    """Browsers keep one cookie per name and host, whatever the port: each server's cookie
    is named after its token, so opening the second does not log out of the first."""
    one, two = auth.token_for("0.0.0.0", None), auth.token_for("0.0.0.0", None)
    first = TestClient(auth.Guard(app.build(explorer), one), base_url="http://10.0.0.5:8000")
    second = TestClient(auth.Guard(app.build(explorer), two), base_url="http://10.0.0.5:8001")
    with first, second:
        second.cookies = first.cookies  # one browser
        assert first.get(f"/?token={one}").status_code == 200
        assert second.get(f"/?token={two}").status_code == 200
        assert first.get("/api/meta").status_code == 200
        assert second.get("/api/meta").status_code == 200


def test_a_lasso_finds_every_row_inside_its_polygon(client):
    def lasso(polygon, **params):
        body = np.asarray(polygon, "<f8").tobytes()
        return client.post("/api/lasso", params=params, content=body)

    everything = lasso([(-2, -2), (2, -2), (2, 2), (-2, 2)], map="tsne")
    assert np.array_equal(np.frombuffer(everything.content, "<u4"), np.arange(N))
    pts = _points(client.get("/api/points?map=tsne").content)
    left = np.frombuffer(lasso([(-2, -2), (0, -2), (0, 2), (-2, 2)]).content, "<u4")
    assert np.array_equal(left, pts["rows"][pts["x"] < 0])
    for bad in ([(0, 0), (1, 1)], [(0, 0), (1, np.nan), (1, 1)]):
        r = lasso(bad)
        assert r.status_code == 400 and "error" in r.json()
    assert client.post("/api/lasso", content=b"abc").status_code == 400
    assert lasso([(0, 0), (1, 0), (1, 1)], map="nope").status_code == 400


def test_a_deeply_nested_body_is_a_400(client):
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"z": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"):
        r = client.post("/api/decode", content=body)
        assert r.status_code == 400 and "nested" in r.json()["error"], r.text


def _store_digest(path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + f.read_bytes())
    return h.hexdigest()


def test_a_real_server_answers_and_never_writes_to_the_store(stored):
    folder, _, _ = stored
    before = _store_digest(folder / "e.zarr")
    with serve(Z20, folder / "e.zarr", providers="cpu") as srv:
        assert srv.url.startswith("http://127.0.0.1:") and srv.token is None
        with urllib.request.urlopen(srv.url + "api/meta", timeout=10) as r:
            meta = json.load(r)
        assert meta["rows"] == N and meta["maps"] == ["tsne", "pca"] and meta["inputs"]
        for path in (
            "api/points",
            "api/points?map=pca",
            "api/rows/3/samples.png",
            "api/search?q=1",
        ):
            urllib.request.urlopen(srv.url + path, timeout=10).read()
        with pytest.raises(VaefastError, match=f"cannot listen on 127.0.0.1:{srv.port}"):
            serve(Z20, folder / "e.zarr", port=srv.port)
    assert _store_digest(folder / "e.zarr") == before
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(srv.url + "api/meta", timeout=2)


def test_off_loopback_the_url_carries_a_token_the_server_requires(stored):
    folder, _, _ = stored
    with serve(Z20, folder / "e.zarr", host="0.0.0.0", providers="cpu") as srv:
        assert f"?token={srv.token}" in srv.url
        assert urllib.parse.urlsplit(srv.url).hostname not in ("0.0.0.0", "::", "127.0.0.1")
        with urllib.request.urlopen(srv.url, timeout=10) as r:  # the printed URL opens
            assert r.status == 200
        base = f"http://127.0.0.1:{srv.port}/"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + "api/meta", timeout=10)
        assert refused.value.code == 403
        with urllib.request.urlopen(f"{base}api/meta?token={srv.token}", timeout=10) as r:
            assert json.load(r)["rows"] == N


def test_a_store_without_tsne_opens_with_pca_and_a_z2_store_with_mu_itself(tmp_path, vae):
    _inputs(tmp_path, 120)
    embed(Z20, str(tmp_path / "x.npz"), tmp_path / "plain.zarr", progress=False)
    cols = Columns(tmp_path / "plain.zarr", vae.meta["weights_sha256"], str(Z20))
    assert cols.maps() == ["pca"]
    from sklearn.decomposition import PCA

    mu = np.asarray(store.open_embeddings(tmp_path / "plain.zarr")["mu"][:], np.float64)
    ref = PCA(2).fit_transform(mu)
    got = cols.positions("pca").astype(np.float64)
    for k in range(2):  # the same axes up to sign and the normalisation's scale
        assert abs(np.corrcoef(got[:, k], ref[:, k])[0, 1]) > 0.9999
    explained = np.linalg.eigvalsh(np.cov(mu, rowvar=False))[::-1][:2] / np.trace(
        np.cov(mu, rowvar=False)
    )
    assert cols.meta()["map_axes"]["pca"] == [
        f"PC{k + 1} ({100 * r:.1f} % of μ's variance)" for k, r in enumerate(explained)
    ]
    z2 = runtime.load(Z2, providers="cpu")
    embed(Z2, str(tmp_path / "x.npz"), tmp_path / "z2.zarr", tsne=True, progress=False)
    cols = Columns(tmp_path / "z2.zarr", z2.meta["weights_sha256"], str(Z2))
    assert cols.maps() == ["mu", "tsne", "pca"]  # opens on μ itself, its t-SNE offered
    assert cols.meta()["map_axes"]["mu"] == ["μ₁", "μ₂"]
    assert cols.meta()["map_axes"]["tsne"] == ["t-SNE 1", "t-SNE 2"]
    meta = cols.meta()
    cx, cy, half = meta["mu_frame"]
    mu = np.asarray(store.open_embeddings(tmp_path / "z2.zarr")["mu"][:], np.float64)
    np.testing.assert_allclose(cols.positions("mu") * half + (cx, cy), mu, atol=1e-5)


def test_a_moved_input_loses_thumbnails_but_not_the_map(tmp_path, vae):
    _inputs(tmp_path, 120)
    embed(Z20, str(tmp_path / "x.npz"), tmp_path / "e.zarr", progress=False)
    (tmp_path / "x.npz").rename(tmp_path / "moved.npz")
    ex = app.Explorer(vae, Columns(tmp_path / "e.zarr", vae.meta["weights_sha256"], str(Z20)))
    try:
        with TestClient(app.build(ex), base_url="http://127.0.0.1") as c:
            meta = c.get("/api/meta").json()
            assert not meta["inputs"] and "x.npz" in meta["inputs_note"]
            r = c.get("/api/rows/1/input.png")
            assert r.status_code == 404 and "unavailable" in r.json()["error"]
            assert c.get("/api/rows/1/reconstruction.png").status_code == 200
            assert len(_points(c.get("/api/points").content)["rows"]) == 120
    finally:
        ex.decoder.close()


def test_an_input_given_by_a_relative_path_is_found_from_any_working_folder(
    tmp_path, vae, monkeypatch
):
    """A store records where its input is, not how it was spelled: explore run from
    another folder still shows the images."""
    from tests.helpers import write_image_folder

    X, _ = _inputs(tmp_path, 40)
    work = tmp_path / "work"
    write_image_folder(work / "digits", X.reshape(-1, 28, 28), classes=2)
    monkeypatch.chdir(work)
    model = EXPORTED / "mnist5k-conv-z16"
    conv = runtime.load(model, providers="cpu")
    embed(model, "images:digits", "e.zarr", progress=False)
    monkeypatch.chdir(tmp_path)
    ex = app.Explorer(conv, Columns(work / "e.zarr", conv.meta["weights_sha256"], str(model)))
    try:
        assert ex.inputs.source is not None, ex.inputs.note
        with TestClient(app.build(ex), base_url="http://127.0.0.1") as c:
            assert c.get("/api/meta").json()["inputs"]
            assert c.get("/api/rows/3/input.png").status_code == 200
    finally:
        ex.decoder.close()


def test_the_cli_refuses_another_models_store_a_missing_store_and_a_busy_port(stored):
    folder, _, _ = stored
    r = run_cli("explore", str(Z2), str(folder / "e.zarr"), "--no-browser")
    assert r.returncode == 2 and "embedded with another model" in r.stderr
    assert f"({Z20})" in r.stderr  # the model it was embedded with, named
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("explore", str(Z20), str(folder / "none.zarr"), "--no-browser")
    assert r.returncode == 2 and "no such embedding store" in r.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_cli(
            "explore", str(Z20), str(folder / "e.zarr"), "--no-browser", "--port", str(port)
        )
    assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_cli_embeds_with_data_serves_and_stops_on_a_signal(tmp_path, sig):
    _inputs(tmp_path, 120)
    cmd = [
        sys.executable,
        "-c",
        "import signal, sys; signal.signal(signal.SIGINT, "
        "signal.default_int_handler); from vaefast.cli import main; sys.exit(main())",
    ]
    args = [
        "explore",
        str(Z20),
        str(tmp_path / "e.zarr"),
        "--data",
        str(tmp_path / "x.npz"),
        "--no-browser",
        "--quiet",
    ]
    proc = subprocess.Popen(
        cmd + args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        url = re.search(r"at (http://\S+) ", line).group(1)
        with urllib.request.urlopen(url + "api/meta", timeout=10) as r:
            meta = json.load(r)
        assert meta["rows"] == 120 and meta["maps"][0] == "tsne"  # embedded with its t-SNE
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == 0
        assert "stopped" in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "api/meta", timeout=2)


def test_the_readme_documents_every_endpoint_and_only_those(explorer):
    from starlette.routing import Route

    routes = {
        f"{m} {r.path}"
        for r in app.build(explorer).routes
        if isinstance(r, Route) and r.path.startswith("/api/")
        for m in sorted(r.methods - {"HEAD"})
    }
    text = (ROOT / "docs" / "explore.md").read_text()
    documented = set(re.findall(r"^\| `((?:GET|POST) /api/[^?`\[]*)", text, re.M))
    assert documented == routes


def test_the_listening_socket_names_tcp_so_responses_are_not_delayed():
    """asyncio sets TCP_NODELAY only on sockets created with IPPROTO_TCP; without it a
    keep-alive response waits ~40 ms for the browser's delayed ACK (measured: 44 ms vs
    4 ms a decode round trip)."""
    from vaefast.explore import _bind

    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_an_image_folder_store_shows_ids_and_sets_skipped_rows_apart(tmp_path, vae):
    """Rows of an image folder carry their file names (search finds them); a file that
    could not be decoded is listed with its reason and never drawn."""
    from tests.helpers import photo_crops, write_image_folder

    names = write_image_folder(tmp_path / "imgs", photo_crops(12, 40, 40, seed=3), classes=3)
    (tmp_path / "imgs" / names[5]).write_bytes(b"not a jpeg")
    embed(Z20, f"images:{tmp_path / 'imgs'}", tmp_path / "e.zarr", skip_bad=True, progress=False)
    ex = app.Explorer(vae, Columns(tmp_path / "e.zarr", vae.meta["weights_sha256"], str(Z20)))
    try:
        with TestClient(app.build(ex), base_url="http://127.0.0.1") as c:
            meta = c.get("/api/meta").json()
            assert meta["rows"] == 12 and meta["drawn"] == 11 and meta["skipped"] == 1
            assert meta["skipped_rows"][0]["row"] == 5 and meta["skipped_rows"][0]["id"] == names[5]
            assert "not an image" in meta["skipped_rows"][0]["reason"]
            assert meta["label_names"] == ["class_0", "class_1", "class_2"]
            rows = _points(c.get("/api/points").content)["rows"].tolist()
            assert rows == [r for r in range(12) if r != 5]
            info = c.get("/api/rows/5").json()
            assert info["id"] == names[5] and info["skipped"] and "mu" not in info
            r = c.get("/api/rows/5/reconstruction.png")
            assert r.status_code == 404 and "skipped" in r.json()["error"]
            assert c.get("/api/rows/7").json()["id"] == names[7]
            assert c.get(f"/api/search?q={names[7].split('/')[1]}").json()["rows"] == [7]
            in_class_1 = [i for i, name in enumerate(names) if name.startswith("class_1/")]
            assert c.get("/api/search?q=class_1").json()["rows"] == in_class_1
            csv_text = c.post("/api/selection?format=csv", content=np.array([7], "<u4").tobytes())
            assert csv_text.text.splitlines()[1] == f"7,{names[7]},class_1"
    finally:
        ex.decoder.close()


# --- the input's own columns ------------------------------------------------------------


def columned_store(folder, n: int = 120):
    """n mnist5k digits as a parquet table with the columns a user's dataset carries: a
    caption (text), a split (a category) and a score (a number, one null)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = data.read("mnist5k")
    pick = np.arange(n) * (len(raw.X) // n)
    cells = []
    for im in raw.X[pick]:
        buf = io.BytesIO()
        Image.fromarray(im.reshape(28, 28)).save(buf, format="PNG")
        cells.append({"bytes": buf.getvalue(), "path": None})
    score = np.linspace(0, 1, n)
    table = pa.table(
        {
            "image": pa.array(cells, pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            "label": pa.array(raw.y[pick].astype(np.int64)),
            "caption": [f"a handwritten {d}, sample {i}" for i, d in enumerate(raw.y[pick])],
            "split": ["test" if i % 4 == 0 else "train" for i in range(n)],
            "score": pa.array([None if i == 3 else float(s) for i, s in enumerate(score)]),
        }
    )
    pq.write_table(table, folder / "t.parquet")
    embed(Z20, f"parquet:{folder / 't.parquet'}", folder / "c.zarr", tsne=True, progress=False)
    return folder / "c.zarr", table


@pytest.fixture(scope="module")
def columned(tmp_path_factory, vae):
    path, table = columned_store(tmp_path_factory.mktemp("columns"))
    ex = app.Explorer(vae, Columns(path, vae.meta["weights_sha256"], str(Z20)))
    with TestClient(app.build(ex), base_url="http://127.0.0.1") as c:
        yield c, table
    ex.decoder.close()


def test_the_inputs_columns_are_described_coloured_and_shown_per_row(columned):
    c, table = columned
    meta = c.get("/api/meta").json()
    assert meta["columns"] == [
        {"name": "caption", "kind": "text"},
        {"name": "split", "kind": "category", "values": ["test", "train"], "missing": 0},
        {"name": "score", "kind": "number", "range": [0.0, 1.0]},
    ]
    n = table.num_rows
    rows = np.frombuffer(c.get("/api/points?map=tsne").content[4 : 4 + 4 * n], "<u4")
    codes = np.frombuffer(c.get("/api/column?name=split&map=tsne").content, "<u2")
    assert codes.tolist() == [0 if r % 4 == 0 else 1 for r in rows]
    score = np.frombuffer(c.get("/api/column?name=score&map=tsne").content, "<u2")
    expected = np.nan_to_num(np.array(table.column("score").to_pylist(), float)[rows])
    np.testing.assert_allclose(score / 65535, expected, atol=1e-4)
    assert c.get("/api/column?name=caption").status_code == 400  # text: searched, not coloured
    assert c.get("/api/column?name=nope").status_code == 404
    assert c.get("/api/rows/5").json()["columns"] == {
        "caption": table.column("caption")[5].as_py(),
        "split": "train",
        "score": pytest.approx(table.column("score")[5].as_py()),
    }
    assert c.get("/api/rows/3").json()["columns"]["score"] is None


@pytest.mark.parametrize(
    "query, wanted",
    [
        ("split:test", lambda i, score: i % 4 == 0),
        ("split:TEST", lambda i, score: i % 4 == 0),
        ("test", lambda i, score: i % 4 == 0),  # any column's value
        ("score>0.9", lambda i, score: score is not None and score > 0.9),
        ("score <= 0.05", lambda i, score: score is not None and score <= 0.05),
        ("caption:SAMPLE 11", lambda i, score: str(i).startswith("11")),
        ("split>3", lambda i, score: False),  # a category has no order: plain text, no match
    ],
)
def test_search_asks_the_inputs_columns(columned, query, wanted):
    c, table = columned
    got = c.get("/api/search", params={"q": query}).json()["rows"]
    scores = table.column("score").to_pylist()
    assert got == [i for i in range(table.num_rows) if wanted(i, scores[i])]


def test_selection_downloads_carry_the_inputs_columns(columned):
    import pyarrow.parquet as pq

    c, table = columned
    body = np.array([2, 3, 4], "<u4").tobytes()
    text = list(csv.reader(io.StringIO(c.post("/api/selection?format=csv", content=body).text)))
    assert text[0] == ["row", "id", "label", "caption", "split", "score"]
    assert text[2][3:] == [table.column("caption")[3].as_py(), "train", ""]  # no score
    got = pq.read_table(io.BytesIO(c.post("/api/selection?format=parquet", content=body).content))
    assert got.column("split").to_pylist() == ["train", "train", "test"]
    assert got.column("caption").to_pylist() == table.column("caption").to_pylist()[2:5]
