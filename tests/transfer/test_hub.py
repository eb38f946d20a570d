"""The weights hub: the table of published files, and cached, resumable, checksummed
downloads -- served by a loopback HTTP server standing in for the publishers (through
``$DEEPARCH_WEIGHTS_MIRROR``), so nothing here needs the internet."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

import deeparch
from deeparch.errors import DownloadError, WeightsError
from deeparch.transfer import hub
from deeparch.transfer.torchvision import ARCHS as TV_ARCHS


class _Handler(BaseHTTPRequestHandler):
    """GET of the files in ``server.files``, honouring ``Range: bytes=N-`` with a 206;
    ``server.fail`` answers every request with that status; ``server.cut`` stops a body
    after that many bytes (once)."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        if srv.fail:
            self.send_error(srv.fail)
            return
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if ranged:
            start = int(ranged[1])
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
        cut, srv.cut = srv.cut, None
        self.wfile.write(rest if cut is None else rest[:cut])
        if cut is not None:
            self.wfile.flush()
            self.close_connection = True


@pytest.fixture
def server(monkeypatch, tmp_path):
    """A mirror on 127.0.0.1 and an empty weights cache."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests, httpd.fail, httpd.cut = {}, [], 0, None
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    monkeypatch.setenv("DEEPARCH_WEIGHTS_MIRROR", httpd.url + "/")
    monkeypatch.setenv("DEEPARCH_WEIGHTS", str(tmp_path / "cache"))
    yield httpd
    httpd.shutdown()
    httpd.server_close()


PAYLOAD = bytes(range(256)) * 1200  # 300 KiB


def publish(monkeypatch, server, name: str, body: bytes = PAYLOAD,
            checksum: str | None = "auto") -> hub.HubEntry:
    """Serve ``body`` as entry ``name``'s file, and make the table's checksum the body's."""
    e = hub.entry(name)
    if checksum == "auto":
        checksum = (hashlib.md5(body).hexdigest() if e.algorithm == "md5" else
                    hashlib.sha256(body).hexdigest()[:len(e.checksum or "12345678")])
    e = dataclasses.replace(e, checksum=checksum)
    monkeypatch.setitem(hub.ENTRIES, e.name, e)
    server.files["/" + e.filename] = body
    return e


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --------------------------------------------------------------------------- the table


def test_torchvision_checksums_are_the_hash_in_the_file_name():
    entries = hub.known("torchvision")
    assert entries and all(e.source == "torchvision" for e in entries)
    for e in entries:
        m = re.fullmatch(r".+-([0-9a-f]{8,})\.pth", e.filename)
        assert m, e.name
        assert e.algorithm == "sha256-prefix" and e.checksum == m[1], e.name
        assert e.url.startswith("https://download.pytorch.org/models/"), e.name


def test_keras_checksums_are_md5_or_absent():
    entries = hub.known("keras")
    for e in entries:
        assert e.url.startswith("https://storage.googleapis.com/"), e.name
        assert e.url.endswith(".h5"), e.name
        if e.checksum is None:
            assert e.name.startswith(("keras:MobileNet_", "keras:MobileNetV2_")), e.name
            assert e.algorithm is None
        else:
            assert e.algorithm == "md5" and re.fullmatch(r"[0-9a-f]{32}", e.checksum), e.name
    assert hub.entry("keras:VGG16").checksum == "64373286793e3c8b2b4e3219cbf3544b"


def test_every_entry_loads_into_a_registered_model_and_urls_are_unique():
    registered = set(deeparch.list_models())
    entries = hub.known()
    assert len(entries) == len(hub.known("torchvision")) + len(hub.known("keras"))
    for e in entries:
        assert e.model in registered, (e.name, e.model)
        assert e.url.startswith("https://"), e.name
        assert hub.entry(e.name) is e and hub.is_hub_name(e.name)
    assert len({e.url for e in entries}) == len(entries)
    assert len({e.filename for e in entries}) == len(entries)  # the mirror looks up by name


def test_builder_options_are_accepted_by_the_models():
    for model, options in {(e.model, e.options) for e in hub.known() if e.options}:
        with torch.device("meta"):
            deeparch.create_model(model, **dict(options))


def test_the_table_covers_every_architecture_and_application():
    builders = {e.name.split(":")[1].split(".")[0] for e in hub.known("torchvision")}
    assert builders == set(TV_ARCHS)
    apps = ["VGG16", "VGG19", "ResNet50", "ResNet101", "ResNet152", "ResNet50V2",
            "ResNet101V2", "ResNet152V2", "DenseNet121", "DenseNet169", "DenseNet201",
            "MobileNet", "MobileNetV2", "Xception"] + [f"EfficientNetB{b}" for b in range(8)]
    for app in apps:
        for suffix in ("", "_notop"):
            hub.entry(f"keras:{app}{suffix}")
    for alpha in ("0.25", "0.5", "0.75", "1.0"):
        for rows in (128, 160, 192, 224):
            e = hub.entry(f"keras:MobileNet_{alpha}_{rows}")
            assert e.preprocess.size == rows
    e = hub.entry("keras:MobileNet_0.25_128_notop")
    assert e.url.endswith("mobilenet_2_5_128_tf_no_top.h5")
    assert hub.entry("keras:MobileNetV2_1.4_224").url.endswith("kernels_1.4_224.h5")
    assert hub.entry("keras:MobileNetV2_0.35_96").model_kwargs == {"width_mult": 0.35}


def test_names_models_and_preprocessing():
    assert hub.model_for("torchvision:alexnet") == "alexnet_tv"
    assert hub.model_for("torchvision:googlenet") == "googlenet_tv"
    assert hub.entry("torchvision:vgg16").model_kwargs == {"adaptive_pool": 7}
    v1, v2 = hub.entry("torchvision:resnet50"), hub.entry("TorchVision:ResNet50.imagenet1k_v2")
    assert v1.url.endswith("resnet50-0676ba61.pth") and v2.url.endswith("resnet50-11ad3fa6.pth")
    assert hub.entry("torchvision:resnet50.IMAGENET1K_V1") is v1
    assert (v1.preprocess.resize, v2.preprocess.resize, v2.preprocess.size) == (256, 232, 224)
    assert hub.entry("torchvision:efficientnet_b3").preprocess.size == 300
    assert hub.entry("keras:ResNet50").preprocess.name == "keras-caffe"
    assert hub.entry("keras:ResNet50").model == "resnet50_keras"
    assert hub.entry("keras:ResNet50").model_kwargs == {}
    assert hub.entry("keras:MobileNetV2_0.5_160").model_kwargs == {"width_mult": 0.5}
    assert hub.entry("keras:Xception_notop").preprocess.size == 299
    assert hub.entry("keras:DenseNet121").preprocess.name == "keras-torch"
    assert hub.entry("keras:MobileNet").name == "keras:MobileNet_1.0_224"
    assert hub.entry("keras:EfficientNetB7").preprocess.size == 600
    d = hub.entry("keras:VGG16").to_dict()
    assert d["model"] == "vgg16" and isinstance(d["cached"], bool)
    assert d["preprocess"]["name"] == "keras-caffe"


def test_hub_names_and_paths():
    assert hub.is_hub_name("torchvision:resnet50") and hub.is_hub_name("keras:nothing")
    assert not hub.is_hub_name("resnet50.pth") and not hub.is_hub_name(Path("keras:x"))
    assert not hub.is_hub_name("C:/weights/resnet50.pth")
    assert hub.resolve("weights/resnet50.pth") == Path("weights/resnet50.pth")
    assert hub.resolve(Path("/x/y.pth")) == Path("/x/y.pth")


def test_unknown_names_get_one_sentence_with_close_matches():
    with pytest.raises(WeightsError, match=r"did you mean torchvision:resnet50\b") as info:
        hub.resolve("torchvision:resnet5")
    assert "\n" not in str(info.value)
    with pytest.raises(WeightsError, match="keras:VGG16"):
        hub.model_for("keras:VGG61")
    with pytest.raises(WeightsError, match=r"known\(\)"):
        hub.entry("keras:zzzzzzzzzzzzzzzzzzzzzzz")
    with pytest.raises(WeightsError, match="torchvision, keras"):
        hub.known("timm")


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPARCH_WEIGHTS", str(tmp_path / "w"))
    assert hub.cache_dir() == tmp_path / "w"
    monkeypatch.delenv("DEEPARCH_WEIGHTS")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == tmp_path / "xdg" / "deeparch" / "weights"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == tmp_path / "home" / ".cache" / "deeparch" / "weights"
    e = hub.entry("keras:VGG16")
    assert e.path(tmp_path / "r") == tmp_path / "r" / "keras" / e.filename


# --------------------------------------------------------------------------- downloads


def test_download_then_cache_hit_without_a_request(monkeypatch, server, tmp_path):
    e = publish(monkeypatch, server, "torchvision:resnet18")
    path = hub.resolve("torchvision:resnet18")
    assert path == tmp_path / "cache" / "torchvision" / "resnet18-f37072fd.pth"
    assert path.read_bytes() == PAYLOAD and leftovers(path.parent) == [path.name]
    assert server.requests == [("/" + e.filename, None)]
    assert e.is_cached() and hub.resolve("torchvision:resnet18", download=False) == path
    assert hub.resolve("TORCHVISION:resnet18") == path
    assert len(server.requests) == 1


def test_root_overrides_the_cache(monkeypatch, server, tmp_path):
    publish(monkeypatch, server, "keras:VGG19_notop")
    path = hub.resolve("keras:VGG19_notop", root=tmp_path / "mine")
    assert path.parent == tmp_path / "mine" / "keras" and path.read_bytes() == PAYLOAD
    assert not (tmp_path / "cache").exists()


def test_a_truncated_part_is_resumed_with_a_range_request(monkeypatch, server, tmp_path):
    e = publish(monkeypatch, server, "torchvision:resnet50.IMAGENET1K_V2")
    dest = e.path()
    dest.parent.mkdir(parents=True)
    part = dest.with_name(dest.name + ".part")
    part.write_bytes(PAYLOAD[:100_000])
    assert hub.resolve(e.name) == dest and dest.read_bytes() == PAYLOAD
    assert server.requests == [("/resnet50-11ad3fa6.pth", "bytes=100000-")]
    assert not part.exists()


def test_an_interrupted_download_keeps_its_part_and_the_next_call_resumes(monkeypatch, server):
    e = publish(monkeypatch, server, "torchvision:squeezenet1_0")
    server.cut = 70_000
    with pytest.raises(DownloadError, match="resumes it") as info:
        hub.resolve(e.name)
    assert "\n" not in str(info.value)
    part = e.path().with_name(e.filename + ".part")
    assert part.stat().st_size == 70_000 and not e.path().exists()
    assert hub.resolve(e.name).read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/" + e.filename, "bytes=70000-")


def test_a_checksum_mismatch_leaves_nothing_under_the_real_name(monkeypatch, server):
    e = publish(monkeypatch, server, "torchvision:densenet121", checksum="a639ec97")
    with pytest.raises(DownloadError, match="starting a639ec97") as info:
        hub.resolve(e.name)
    assert "\n" not in str(info.value)
    assert leftovers(e.path().parent) == []


def test_keras_md5_is_checked(monkeypatch, server):
    e = publish(monkeypatch, server, "keras:ResNet50")
    assert hub.resolve(e.name).read_bytes() == PAYLOAD
    bad = publish(monkeypatch, server, "keras:ResNet101", checksum="0" * 32)
    with pytest.raises(DownloadError, match="MD5"):
        hub.resolve(bad.name)
    assert not bad.path().exists()


def test_a_file_without_a_published_checksum_still_downloads(monkeypatch, server):
    e = publish(monkeypatch, server, "keras:MobileNet_0.5_160_notop", checksum=None)
    assert hub.resolve(e.name).read_bytes() == PAYLOAD


def test_not_cached_and_no_download_says_how_to_fetch_it(server):
    with pytest.raises(DownloadError, match="download=True") as info:
        hub.resolve("torchvision:vgg16_bn", download=False)
    msg = str(info.value)
    assert "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth" in msg and "\n" not in msg
    assert server.requests == []


def test_a_server_error_is_one_sentence(monkeypatch, server):
    e = publish(monkeypatch, server, "torchvision:resnet34")
    server.fail = 503
    with pytest.raises(DownloadError, match="HTTP 503") as info:
        hub.resolve(e.name)
    assert "\n" not in str(info.value) and e.url in str(info.value)
    assert not e.path().exists()


def test_connection_refused_is_one_sentence(monkeypatch, tmp_path):
    with socket.socket() as s:           # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DEEPARCH_WEIGHTS_MIRROR", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("DEEPARCH_WEIGHTS", str(tmp_path / "cache"))
    with pytest.raises(DownloadError, match="could not reach") as info:
        hub.resolve("keras:DenseNet201")
    assert "\n" not in str(info.value)


def test_a_mirror_can_be_a_local_folder(monkeypatch, tmp_path):
    e = dataclasses.replace(hub.entry("torchvision:alexnet"),
                            checksum=hashlib.sha256(PAYLOAD).hexdigest()[:8])
    monkeypatch.setitem(hub.ENTRIES, e.name, e)
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / e.filename).write_bytes(PAYLOAD)
    monkeypatch.setenv("DEEPARCH_WEIGHTS_MIRROR", str(tmp_path / "mirror"))
    monkeypatch.setenv("DEEPARCH_WEIGHTS", str(tmp_path / "cache"))
    assert hub.mirror_url(e).startswith("file://")
    assert hub.resolve(e.name).read_bytes() == PAYLOAD


def test_progress_bar_on_stderr(monkeypatch, server, capsys):
    publish(monkeypatch, server, "torchvision:googlenet")
    hub.resolve("torchvision:googlenet", progress=True)
    assert "googlenet-1378be20.pth" in capsys.readouterr().err


def test_create_model_from_a_resolved_hub_name(monkeypatch, server):
    torch.manual_seed(0)
    source = deeparch.create_model("squeezenet1_1")
    buf = io.BytesIO()
    torch.save(source.state_dict(), buf)
    publish(monkeypatch, server, "torchvision:squeezenet1_1", body=buf.getvalue())
    spec = "torchvision:squeezenet1_1"
    model = deeparch.create_model(hub.model_for(spec), weights=hub.resolve(spec))
    for (k, a), b in zip(source.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k
    # the name itself works wherever a weights file does, with the publisher's recipe
    named = deeparch.create_model("squeezenet1_1", weights=spec)
    for (k, a), b in zip(source.state_dict().items(), named.state_dict().values()):
        assert torch.equal(a, b), k
    assert named.weights_report.preprocess == hub.entry(spec).preprocess
    assert deeparch.transfer.identify(spec)[0] == "squeezenet1_1"
    with pytest.raises(deeparch.errors.WeightsMismatchError, match="loads into squeezenet1_1"):
        deeparch.create_model("resnet18", weights=spec)


def test_cli_lists_and_fetches_from_a_mirror_folder(monkeypatch, tmp_path, capsys):
    from deeparch.cli import main

    e = hub.entry("torchvision:resnet18")
    served = tmp_path / "served"
    served.mkdir()
    (served / e.filename).write_bytes(PAYLOAD)
    digest = hashlib.sha256(PAYLOAD).hexdigest()[:8]
    monkeypatch.setitem(hub.ENTRIES, e.name, dataclasses.replace(e, checksum=digest))
    monkeypatch.setenv("DEEPARCH_WEIGHTS_MIRROR", str(served))
    monkeypatch.setenv("DEEPARCH_WEIGHTS", str(tmp_path / "cache"))
    assert main(["weights", "fetch", "torchvision:resnet18", "--no-progress"]) == 0
    assert (tmp_path / "cache" / "torchvision" / e.filename).read_bytes() == PAYLOAD
    capsys.readouterr()
    assert main(["weights", "list", "--source", "torchvision"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines()
                if x.startswith("torchvision:resnet18 "))
    assert line.split()[1:] == ["resnet18", "cached"]
    # a bad name anywhere in the list: one sentence, nothing fetched
    assert main(["weights", "fetch", "torchvision:alexnet", "torchvision:nope"]) == 2
    assert "no published weights" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "torchvision" / hub.entry("torchvision:alexnet").filename
                ).exists()


def test_every_keras_entry_loads_into_a_model_the_keras_loader_fills():
    from deeparch.transfer import keras as K

    filled = {a.model for a in K.archs().values()}
    for e in hub.known("keras"):
        assert e.model in filled, e.name
