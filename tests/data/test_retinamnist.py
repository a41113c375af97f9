"""RetinaMNIST from the real shared file, MD5 checks, and the download path against a local
HTTP server on 127.0.0.1 and file:// URLs.

Named for emdloss.data.retinamnist; also covers emdloss.data._download.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("platformdirs")  # the train extra: download cache and progress bar
pytest.importorskip("tqdm")

from emdloss.data import DownloadError, download_file, load_dataset, md5_file, resolve_data_dir
from emdloss.data.retinamnist import FILES, load_retinamnist, retinamnist_url

COUNTS = {
    "train": [486, 128, 206, 194, 66],
    "val": [54, 12, 28, 20, 6],
    "test": [174, 46, 92, 68, 20],
}


def test_real_file_official_split(data_dir: Path) -> None:
    ds = load_dataset("retinamnist", data_dir=data_dir)
    assert ds.class_names == ["0", "1", "2", "3", "4"]
    assert ds.kind == "image" and ds.input_shape == (3, 28, 28)
    for split, counts in COUNTS.items():
        assert ds.class_counts(split) == counts
    x, y = ds.test[5]
    assert x.dtype == torch.float32 and x.shape == (3, 28, 28)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    raw = np.load(data_dir / "retinamnist.npz")
    assert torch.equal(x, torch.from_numpy(raw["test_images"][5]).permute(2, 0, 1) / 255.0)
    assert y == int(raw["test_labels"][5, 0])
    # Channel statistics from the training images only.
    train = raw["train_images"].astype(np.float64) / 255.0
    assert np.allclose(ds.mean, train.mean(axis=(0, 1, 2)))
    assert np.allclose(ds.std, train.std(axis=(0, 1, 2)))
    assert "official" in ds.protocol


def test_real_file_md5_matches_published_digest(data_dir: Path) -> None:
    digest = hashlib.md5((data_dir / "retinamnist.npz").read_bytes()).hexdigest()
    assert digest == FILES[28][1] == md5_file(data_dir / "retinamnist.npz")


def test_wrong_md5_is_detected(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"checksum mismatch .*expected 0{32}"):
        load_retinamnist(data_dir, md5="0" * 32)
    damaged = tmp_path / "retinamnist.npz"
    shutil.copyfile(data_dir / "retinamnist.npz", damaged)
    with open(damaged, "ab") as handle:
        handle.write(b"x")
    with pytest.raises(
        ValueError, match=f"retinamnist.npz: MD5 [0-9a-f]{{32}}, expected {FILES[28][1]}"
    ):
        load_retinamnist(tmp_path, download=False)


def test_official_split_refuses_folds(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="official"):
        load_dataset("retinamnist", data_dir=data_dir, fold=0, num_folds=5)
    with pytest.raises(ValueError, match="valid sizes"):
        load_dataset("retinamnist", data_dir=data_dir, size=32)


def test_data_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EMDLOSS_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("EMDLOSS_DATA")
    import platformdirs

    assert resolve_data_dir() == Path(platformdirs.user_cache_dir("emdloss"))


# --- download path --------------------------------------------------------------------------


def _synthetic_npz() -> bytes:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 10), ("val", 5), ("test", 5)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 5).reshape(n, 1).astype(np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _Truncating(_Quiet):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5000")
        self.end_headers()
        self.wfile.write(b"only a few bytes")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """A threaded HTTP server on 127.0.0.1 serving a small RetinaMNIST-format file."""
    root = tmp_path / "served"
    root.mkdir()
    payload = _synthetic_npz()
    (root / "retinamnist.npz").write_bytes(payload)
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/retinamnist.npz"
        yield url, hashlib.md5(payload).hexdigest(), root
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_download_from_local_http_server(served: tuple[str, str, Path], tmp_path: Path) -> None:
    url, md5, root = served
    target = tmp_path / "cache"
    ds = load_retinamnist(target, url=url, md5=md5, progress=False)
    assert sorted(p.name for p in target.iterdir()) == ["retinamnist.npz"]  # no temp left
    assert (target / "retinamnist.npz").read_bytes() == (root / "retinamnist.npz").read_bytes()
    assert [len(ds.train), len(ds.val), len(ds.test)] == [10, 5, 5]
    assert ds.class_counts("train") == [2, 2, 2, 2, 2]
    # A second load reads the verified file without downloading (the server may be gone).
    assert len(load_retinamnist(target, url="http://127.0.0.1:9/", md5=md5).test) == 5


def test_download_url_from_environment(
    served: tuple[str, str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, md5, _ = served
    monkeypatch.setenv("EMDLOSS_RETINAMNIST_URL", url.replace("retinamnist.npz", "{filename}"))
    assert retinamnist_url(28) == url
    ds = load_dataset("retinamnist", data_dir=tmp_path / "env", md5=md5, progress="false")
    assert len(ds.train) == 10


def test_checksum_mismatch_leaves_nothing_behind(
    served: tuple[str, str, Path], tmp_path: Path
) -> None:
    url, md5, _ = served
    target = tmp_path / "cache"
    with pytest.raises(ValueError, match=f"MD5 {md5}, expected {'f' * 32}"):
        load_retinamnist(target, url=url, md5="f" * 32, progress=False)
    assert list(target.iterdir()) == []
    with pytest.raises(ValueError, match="checksum mismatch"):
        download_file(url, target / "x.bin", md5="f" * 32, progress=False)
    assert list(target.iterdir()) == []


def test_truncated_download_leaves_nothing_behind(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Truncating)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/file"
        with pytest.raises(DownloadError, match=r"incomplete|interrupted"):
            download_file(url, tmp_path / "out" / "file", progress=False)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert list((tmp_path / "out").iterdir()) == []


def test_file_url_download(tmp_path: Path) -> None:
    payload = _synthetic_npz()
    source = tmp_path / "mirror" / "retinamnist.npz"
    source.parent.mkdir()
    source.write_bytes(payload)
    md5 = hashlib.md5(payload).hexdigest()
    ds = load_retinamnist(tmp_path / "cache", url=source.as_uri(), md5=md5, progress=False)
    assert len(ds.val) == 5
    assert md5_file(tmp_path / "cache" / "retinamnist.npz") == md5


def test_offline_error_says_where_to_put_the_file(tmp_path: Path) -> None:
    target = tmp_path / "cache"
    with pytest.raises(FileNotFoundError) as info:
        # Port 9 (discard) on 127.0.0.1 refuses the connection: an offline machine's symptom.
        load_retinamnist(target, url="http://127.0.0.1:9/retinamnist.npz", progress=False)
    message = str(info.value)
    assert f"into {target}" in message and FILES[28][1] in message and "EMDLOSS_DATA" in message
    assert not target.exists() or list(target.iterdir()) == []
    with pytest.raises(FileNotFoundError, match=r"put retinamnist\.npz"):
        load_retinamnist(target, download=False)
