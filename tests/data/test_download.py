"""Cache folder, resumable verified downloads and safe extraction, against a loopback server."""
from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from deeparch.data import download as dl
from deeparch.data import load_dataset
from deeparch.errors import DataError, DownloadError

from . import generators as gen


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output quiet
        pass

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        ranged = self.headers.get("Range")
        if ranged and server.ranges:
            start = int(ranged.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        rest = body[start:]
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        cut = server.cut_after.pop(self.path, None)
        self.wfile.write(rest if cut is None else rest[:cut])
        if cut is not None:
            self.wfile.flush()
            self.close_connection = True


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests, httpd.cut_after, httpd.ranges = {}, [], {}, True
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


PAYLOAD = bytes(range(256)) * 400  # 100 KiB


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --------------------------------------------------------------------------- cache dir


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPARCH_DATA", str(tmp_path / "d"))
    assert dl.cache_dir() == tmp_path / "d"
    monkeypatch.delenv("DEEPARCH_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert dl.cache_dir() == tmp_path / "xdg" / "deeparch" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert dl.cache_dir() == tmp_path / "home" / ".cache" / "deeparch" / "data"
    assert dl.dataset_dir("mnist", tmp_path) == tmp_path / "mnist"


def test_sources_table_is_complete():
    for name, resources in {**dl.SOURCES, **dl.BINARY_SOURCES}.items():
        for r in resources:
            assert r.url.endswith(r.filename) and r.url.startswith(("http://", "https://"))
            assert len(r.md5 or "") == 32 or len(r.sha256 or "") == 64, (name, r)
    assert dl.SOURCES["cifar10"][0].md5 == "c58f30108f718f92721af3b95e74349a"


# --------------------------------------------------------------------------- download_file


def test_download_verifies_and_places_the_file(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    dest = dl.download_file(server.url + "/f.bin", tmp_path / "c" / "f.bin", md5=md5(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD and leftovers(tmp_path / "c") == ["f.bin"]
    # Present and valid: no second request.
    dl.download_file(server.url + "/f.bin", dest, md5=md5(PAYLOAD))
    assert len(server.requests) == 1


def test_download_resumes_a_partial_file_with_a_range_request(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:30000])
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    dl.download_file(server.url + "/f.bin", tmp_path / "f.bin", sha256=sha)
    assert server.requests == [("/f.bin", "bytes=30000-")]
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == ["f.bin"]


def test_download_restarts_when_the_server_ignores_range(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.ranges = False
    (tmp_path / "f.bin.part").write_bytes(b"junk" * 100)
    dl.download_file(server.url + "/f.bin", tmp_path / "f.bin", md5=md5(PAYLOAD))
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_download_complete_partial_answered_416(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD)
    dl.download_file(server.url + "/f.bin", tmp_path / "f.bin", md5=md5(PAYLOAD))
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD and leftovers(tmp_path) == ["f.bin"]


def test_interrupted_download_keeps_the_part_and_resumes(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.cut_after["/f.bin"] = 40000
    with pytest.raises(DownloadError, match="interrupted|stopped after"):
        dl.download_file(server.url + "/f.bin", tmp_path / "f.bin", md5=md5(PAYLOAD))
    assert leftovers(tmp_path) == ["f.bin.part"]  # never a half file under the real name
    assert (tmp_path / "f.bin.part").stat().st_size == 40000
    dl.download_file(server.url + "/f.bin", tmp_path / "f.bin", md5=md5(PAYLOAD))
    assert server.requests[-1] == ("/f.bin", "bytes=40000-")
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_bad_checksum_deletes_everything(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    with pytest.raises(DownloadError, match="does not match its published MD5"):
        dl.download_file(server.url + "/f.bin", tmp_path / "f.bin", md5="0" * 32)
    assert leftovers(tmp_path) == []


def test_http_error(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        dl.download_file(server.url + "/missing.bin", tmp_path / "missing.bin")
    assert leftovers(tmp_path) == []


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_offline_names_the_files_and_where_to_put_them(monkeypatch, tmp_path):
    base = closed_port_url()
    table = tuple(dl.Resource(r.filename, f"{base}/{r.filename}", md5=r.md5)
                  for r in dl.SOURCES["mnist"])
    monkeypatch.setitem(dl.SOURCES, "mnist", table)
    with pytest.raises(DownloadError) as info:
        load_dataset("mnist", root=tmp_path, download=True)
    message = str(info.value)
    assert "could not reach" in message and str(tmp_path / "mnist") in message
    for r in table:
        assert r.filename in message
    assert leftovers(tmp_path / "mnist") == []


# --------------------------------------------------------------------------- end to end


def test_load_dataset_downloads_mnist(server, monkeypatch, tmp_path):
    source = tmp_path / "source"
    written = gen.write_mnist(source, n_train=20, n_test=6)
    table = []
    for path in sorted(source.iterdir()):
        server.files["/mnist/" + path.name] = path.read_bytes()
        table.append(dl.Resource(path.name, f"{server.url}/mnist/{path.name}",
                                 md5=md5(path.read_bytes())))
    monkeypatch.setitem(dl.SOURCES, "mnist", tuple(table))
    monkeypatch.setenv("DEEPARCH_DATA", str(tmp_path / "cache"))
    ds = load_dataset("mnist", split="test", download=True)
    assert np.array_equal(ds.images.numpy(), written["test"][0])
    assert np.array_equal(ds.labels.numpy(), written["test"][1])
    assert leftovers(tmp_path / "cache" / "mnist") == sorted(p.name for p in source.iterdir())
    count = len(server.requests)
    load_dataset("mnist", split="train", download=True)  # already there: no request
    assert len(server.requests) == count


def test_load_dataset_downloads_and_extracts_cifar10(server, monkeypatch, tmp_path):
    written = gen.write_cifar10_python(tmp_path / "src", per_batch=3, n_test=4)
    archive = gen.folder_tar_gz(tmp_path / "src" / "cifar-10-batches-py", "cifar-10-batches-py")
    server.files["/cifar-10-python.tar.gz"] = archive
    monkeypatch.setitem(dl.SOURCES, "cifar10", (dl.Resource(
        "cifar-10-python.tar.gz", server.url + "/cifar-10-python.tar.gz", md5=md5(archive),
        extract=True),))
    ds = load_dataset("cifar10", split="train", root=tmp_path / "data", download=True)
    assert np.array_equal(ds.images.numpy(), written["train"][0])
    assert leftovers(tmp_path / "data" / "cifar10") == ["cifar-10-batches-py",
                                                        "cifar-10-python.tar.gz"]


def test_fetch_unknown_name(tmp_path):
    with pytest.raises(DataError, match="nothing to download"):
        dl.fetch("digits", tmp_path)


# --------------------------------------------------------------------------- extraction


@pytest.mark.parametrize("name", ["/etc/evil", "../evil", "ok/../../evil"])
def test_extract_refuses_unsafe_paths(tmp_path, name):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(gen.tar_gz_bytes({"good/file": b"x", name: b"evil"}))
    out = tmp_path / "out"
    with pytest.raises(DataError, match="unsafe member"):
        dl.extract_archive(archive, out)
    assert leftovers(out) == [] and not (tmp_path / "evil").exists()


def test_extract_refuses_links(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        link = tarfile.TarInfo("data/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match="link or a special file"):
        dl.extract_archive(archive, tmp_path / "out")


def test_extract_corrupt_archive(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(gen.tar_gz_bytes({"d/f": bytes(5000)})[:60])
    with pytest.raises(DataError, match="not a readable tar archive"):
        dl.extract_archive(archive, tmp_path / "out")
    assert leftovers(tmp_path / "out") == []


def test_extract_merges_into_existing_folder(tmp_path):
    (tmp_path / "out" / "d").mkdir(parents=True)
    (tmp_path / "out" / "d" / "mine.txt").write_text("kept")
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(gen.tar_gz_bytes({"d/f": b"new"}))
    assert dl.extract_archive(archive, tmp_path / "out") == [tmp_path / "out" / "d"]
    assert (tmp_path / "out" / "d" / "f").read_bytes() == b"new"
    assert (tmp_path / "out" / "d" / "mine.txt").read_text() == "kept"
    assert leftovers(tmp_path / "out") == ["d"]
