"""Fault injection for the hub: tampered folder and URL files, a hostile HTTP server on
127.0.0.1 (wrong bytes, an endless body, a slow body, redirects), damaged download caches
and interrupted downloads. Every server loop is bounded in bytes and in time."""

import hashlib
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo.hub import _sources

# Bounds on what a hostile handler does, whatever the client does.
_MAX_SENT = 8 << 20  # bytes
_MAX_SECONDS = 6.0


@dataclass
class Route:
    """What the server does for one path: `ok` (send `body`), `endless` (zeros without a
    Content-Length), `slow` (`body` one byte at a time), `big` (announce more than `body`),
    `redirect` (to `location`), `404`."""

    mode: str = "ok"
    body: bytes = b""
    location: str = ""
    need_query: str | None = None  # answer 404 unless the request has exactly this query


@dataclass
class HostileServer:
    routes: dict[str, Route] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)

    def __enter__(self) -> "HostileServer":
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.hits.append(self.path)
                path, _, query = self.path.partition("?")
                route = server.routes.get(path, Route("404"))
                if route.mode == "404" or (
                    route.need_query is not None and query != route.need_query
                ):
                    self.send_error(404)
                    return
                if route.mode == "redirect":
                    self.send_response(302)
                    self.send_header("Location", route.location)
                    self.end_headers()
                    return
                self.send_response(200)
                if route.mode == "endless":
                    self.end_headers()  # no Content-Length: the body ends when we close
                    self._stream(b"\0" * (1 << 16), delay=0.0)
                elif route.mode == "slow":
                    self.send_header("Content-Length", str(len(route.body)))
                    self.end_headers()
                    self._stream(route.body, delay=0.05, step=1)
                elif route.mode == "big":
                    self.send_header("Content-Length", str(len(route.body) * 1000))
                    self.end_headers()
                    self.wfile.write(route.body)
                else:
                    self.send_header("Content-Length", str(len(route.body)))
                    self.end_headers()
                    self.wfile.write(route.body)
                self.close_connection = True

            def _stream(self, data: bytes, *, delay: float, step: int | None = None):
                start, sent = time.monotonic(), 0
                pieces = [data[i : i + step] for i in range(0, len(data), step)] if step else None
                i = 0
                while sent < _MAX_SENT and time.monotonic() - start < _MAX_SECONDS:
                    piece = pieces[i] if pieces else data
                    if pieces and (i := i + 1) >= len(pieces):
                        pieces = None  # the real body is sent; the client gave up or not
                        break
                    try:
                        self.wfile.write(piece)
                        self.wfile.flush()
                    except OSError:  # the client closed the connection
                        return
                    sent += len(piece)
                    if delay:
                        time.sleep(delay)

            def log_message(self, format, *args):
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def serve_folder(self, prefix: str, folder: Path, **modes: Route) -> None:
        for path in sorted(folder.iterdir()):
            self.routes[f"{prefix}{path.name}"] = modes.get(
                path.name.replace(".", "_"), Route("ok", path.read_bytes())
            )


@pytest.fixture
def hub_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    for name in ("ZOO_OFFLINE", "ZOO_DOWNLOAD_DEADLINE", "ZOO_DOWNLOAD_MAX_JSON_BYTES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_sources, "BUNDLED_DIR", tmp_path / "bundled")
    return tmp_path / "home"


MLP: dict[str, Any] = {"width": 8, "depth": 1}


def _publish(folder: Path):
    """A small MLP (ReLU) saved with a golden pair: `(model, state, card)`."""
    model, state = zoo.create_model("mlp_mnist", **MLP)
    card = zoo.save_pretrained(
        folder,
        model,
        state,
        card=zoo.ModelCard(name="mlp_mnist.pub", config=MLP, dataset="fashion-mnist"),
        golden_input=jnp.ones((2, 784)),
    )
    return model, state, card


def _tanh_config(folder: Path) -> bytes:
    """The folder's config.json with `"activation": "tanh"`, padded to the genuine size (so
    that only the checksum, not the size, can tell)."""
    genuine = (folder / "config.json").read_bytes()
    config = json.loads(genuine)
    config["config"]["activation"] = "tanh"
    data = json.dumps(config, separators=(",", ":")).encode()
    assert len(data) <= len(genuine)
    return data + b" " * (len(genuine) - len(data))


def _forge_card(folder: Path, config_bytes: bytes) -> bytes:
    """The folder's card rewritten to list `config_bytes` as its config.json (what a server
    that also controls the card would serve)."""
    card = json.loads((folder / "card.json").read_text())
    card["files"]["config.json"] = {
        "sha256": hashlib.sha256(config_bytes).hexdigest(),
        "size": len(config_bytes),
    }
    card["config"] = json.loads(config_bytes)["config"]
    return json.dumps(card).encode()


def _pin(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _x():
    return jnp.linspace(-1, 1, 784, dtype=jnp.float32)


def _assert_same_outputs(model, reference):
    np.testing.assert_array_equal(np.asarray(model(_x())), np.asarray(reference(_x())))


def _no_leftovers(home: Path) -> None:
    downloads = home / "downloads"
    assert (
        not downloads.exists() or [p for p in downloads.iterdir() if p.name.startswith(".")] == []
    )


# ---------------------------------------------------------------- finding 1: every file pinned


def test_a_url_serving_a_tampered_config_is_refused_and_the_genuine_one_loads(hub_home, tmp_path):
    model, _, _ = _publish(tmp_path / "site")
    pin = _pin((tmp_path / "site" / "card.json").read_bytes())
    with HostileServer() as server:
        # The genuine weights and card, with "activation": "tanh" in config.json.
        server.serve_folder(
            "/m/", tmp_path / "site", config_json=Route("ok", _tanh_config(tmp_path / "site"))
        )
        with pytest.raises(zoo.hub.ChecksumMismatchError, match="config.json is corrupt"):
            zoo.create_model("mlp_mnist", pretrained=f"{server.url}/m/#sha256={pin}")
        assert not (hub_home / "downloads" / pin).exists()
        _no_leftovers(hub_home)
        # The same card with its own config.json loads, bit for bit.
        server.serve_folder("/m/", tmp_path / "site")
        loaded, _ = zoo.create_model("mlp_mnist", pretrained=f"{server.url}/m/#sha256={pin}")
    _assert_same_outputs(loaded, eqx.nn.inference_mode(model))


def test_a_url_serving_a_tampered_golden_pair_is_refused(hub_home, tmp_path):
    _publish(tmp_path / "site")
    pin = _pin((tmp_path / "site" / "card.json").read_bytes())
    golden = bytearray((tmp_path / "site" / "golden.npz").read_bytes())
    golden[-40] ^= 0xFF
    with HostileServer() as server:
        server.serve_folder("/m/", tmp_path / "site", golden_npz=Route("ok", bytes(golden)))
        with pytest.raises(zoo.hub.ChecksumMismatchError, match="golden.npz is corrupt"):
            zoo.load_pretrained(f"{server.url}/m/#sha256={pin}")


def test_a_pin_of_the_weights_alone_is_refused_with_the_pin_to_use(hub_home, tmp_path):
    _, _, card = _publish(tmp_path / "site")
    card_pin = _pin((tmp_path / "site" / "card.json").read_bytes())
    url = (tmp_path / "site").as_uri() + f"/#sha256={card.weights_sha256}"
    with pytest.raises(zoo.hub.ChecksumMismatchError, match=f"SHA-256 of weights.eqx.*{card_pin}"):
        zoo.load_pretrained(url)


def test_a_tampered_local_folder_is_refused(hub_home, tmp_path):
    model, state, _ = _publish(tmp_path / "f")
    folder = tmp_path / "f"
    genuine = (folder / "config.json").read_bytes()
    card = (folder / "card.json").read_bytes()
    # config.json edited: its SHA-256 is no longer the card's.
    (folder / "config.json").write_bytes(_tanh_config(folder))
    with pytest.raises(zoo.hub.ChecksumMismatchError, match="config.json is corrupt"):
        zoo.load_pretrained(folder)
    # The card's files entry forged too, but not its config: the two configs disagree.
    forged = json.loads(card)
    forged["files"] = json.loads(_forge_card(folder, _tanh_config(folder)))["files"]
    (folder / "card.json").write_text(json.dumps(forged))
    with pytest.raises(zoo.hub.WeightsError, match="differs from config.json's"):
        zoo.load_pretrained(folder)
    # A card of zoo 0.1 (no `files`) still gets its config compared.
    legacy = json.loads(card)
    del legacy["files"]
    (folder / "card.json").write_text(json.dumps(legacy))
    with pytest.raises(zoo.hub.WeightsError, match="differs from config.json's"):
        zoo.load_pretrained(folder)
    (folder / "config.json").write_bytes(genuine)
    loaded, _ = zoo.load_pretrained(folder)  # the zoo 0.1 card with its own config loads
    _assert_same_outputs(loaded, eqx.nn.inference_mode(model))
    # A golden pair edited in place fails check_golden by its checksum, not by its values.
    (folder / "card.json").write_bytes(card)
    golden = bytearray((folder / "golden.npz").read_bytes())
    golden[-40] ^= 0xFF
    (folder / "golden.npz").write_bytes(bytes(golden))
    with pytest.raises(zoo.hub.ChecksumMismatchError, match="golden.npz is corrupt"):
        zoo.hub.check_golden(folder, loaded, state)


def test_an_old_card_is_not_trusted_from_a_url(hub_home, tmp_path):
    _publish(tmp_path / "site")
    legacy = json.loads((tmp_path / "site" / "card.json").read_text())
    del legacy["files"]
    (tmp_path / "site" / "card.json").write_text(json.dumps(legacy))
    pin = _pin((tmp_path / "site" / "card.json").read_bytes())
    with pytest.raises(zoo.hub.WeightsError, match="lists no files"):
        zoo.load_pretrained((tmp_path / "site").as_uri() + f"/#sha256={pin}")
    with pytest.raises(zoo.hub.WeightsError, match="lists no files"):
        zoo.hub.card_sha256(tmp_path / "site")


def test_a_card_may_list_only_the_folders_own_files(hub_home, tmp_path):
    _publish(tmp_path / "site")
    card = json.loads((tmp_path / "site" / "card.json").read_text())
    card["files"]["../../escape.txt"] = {"sha256": "0" * 64, "size": 1}
    (tmp_path / "site" / "card.json").write_text(json.dumps(card))
    pin = _pin((tmp_path / "site" / "card.json").read_bytes())
    with pytest.raises(zoo.hub.WeightsError, match="may list only"):
        zoo.load_pretrained((tmp_path / "site").as_uri() + f"/#sha256={pin}")
    assert not (tmp_path / "escape.txt").exists()


# ---------------------------------------------------------------- finding 2: the cache key


def test_a_hostile_url_cannot_poison_the_cache_of_the_genuine_one(hub_home, tmp_path):
    model, _, _ = _publish(tmp_path / "site")
    folder = tmp_path / "site"
    genuine_pin = _pin((folder / "card.json").read_bytes())
    tanh = _tanh_config(folder)
    hostile_card = _forge_card(folder, tanh)
    with HostileServer() as server:
        server.serve_folder("/good/", folder)
        server.serve_folder(
            "/evil/",
            folder,
            config_json=Route("ok", tanh),
            card_json=Route("ok", hostile_card),
        )
        # The hostile folder is self-consistent under its own pin, so it loads (as tanh)...
        evil, _ = zoo.load_pretrained(f"{server.url}/evil/#sha256={_pin(hostile_card)}")
        assert evil.activation == "tanh"
        # ...and the genuine pin still gets the genuine folder, not the cached hostile one.
        good, _ = zoo.load_pretrained(f"{server.url}/good/#sha256={genuine_pin}")
    assert good.activation == "relu"
    _assert_same_outputs(good, eqx.nn.inference_mode(model))
    assert sorted(p.name for p in (hub_home / "downloads").iterdir()) == sorted(
        [genuine_pin, _pin(hostile_card)]
    )


@pytest.mark.parametrize("damage", ["flip", "delete", "card"])
def test_a_damaged_cache_entry_is_removed_and_fetched_again(hub_home, tmp_path, damage):
    model, _, _ = _publish(tmp_path / "site")
    pin = _pin((tmp_path / "site" / "card.json").read_bytes())
    with HostileServer() as server:
        server.serve_folder("/m/", tmp_path / "site")
        url = f"{server.url}/m/#sha256={pin}"
        zoo.load_pretrained(url)
        cached = hub_home / "downloads" / pin
        target = cached / ("card.json" if damage == "card" else "weights.eqx")
        if damage == "delete":
            target.unlink()
        else:
            data = bytearray(target.read_bytes())
            data[len(data) // 2] ^= 0x01
            target.write_bytes(bytes(data))
        n = len(server.hits)
        with pytest.warns(zoo.hub.DamagedCacheWarning, match=f"removed the damaged .*{pin}"):
            loaded, _ = zoo.load_pretrained(url)
        assert len(server.hits) > n  # fetched again
    _assert_same_outputs(loaded, eqx.nn.inference_mode(model))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zoo.load_pretrained(url)  # the repaired cache, without the server


def test_a_damaged_cache_entry_offline_says_what_was_removed(hub_home, tmp_path, monkeypatch):
    _publish(tmp_path / "site")
    pin = _pin((tmp_path / "site" / "card.json").read_bytes())
    with HostileServer() as server:
        server.serve_folder("/m/", tmp_path / "site")
        url = f"{server.url}/m/#sha256={pin}"
        zoo.load_pretrained(url)
    (hub_home / "downloads" / pin / "config.json").write_text("{}")
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.warns(zoo.hub.DamagedCacheWarning, match=str(hub_home / "downloads" / pin)):
        with pytest.raises(zoo.hub.OfflineError, match="ZOO_OFFLINE"):
            zoo.load_pretrained(url)
    assert not (hub_home / "downloads" / pin).exists()


# ---------------------------------------------------------------- finding 3: caps and deadlines


@pytest.mark.parametrize("mode", ["endless", "big"])
def test_a_body_larger_than_the_card_states_is_cut_off(hub_home, tmp_path, mode):
    _, _, card = _publish(tmp_path / "site")
    pin = _pin((tmp_path / "site" / "card.json").read_bytes())
    with HostileServer() as server:
        server.serve_folder("/m/", tmp_path / "site", weights_eqx=Route(mode, b"\0" * 1000))
        start = time.monotonic()
        with pytest.raises(zoo.hub.DownloadLimitError, match=f"{card.weights_size:,} bytes"):
            zoo.load_pretrained(f"{server.url}/m/#sha256={pin}")
        assert time.monotonic() - start < _MAX_SECONDS
    _no_leftovers(hub_home)
    assert not (hub_home / "downloads" / pin).exists()


def test_an_oversized_card_is_refused(hub_home, tmp_path, monkeypatch):
    _publish(tmp_path / "site")
    monkeypatch.setenv("ZOO_DOWNLOAD_MAX_JSON_BYTES", "1000")
    pin = _pin((tmp_path / "site" / "card.json").read_bytes())
    with HostileServer() as server:
        server.serve_folder("/m/", tmp_path / "site", card_json=Route("endless"))
        with pytest.raises(zoo.hub.DownloadLimitError, match="more than the 1,000 bytes"):
            zoo.load_pretrained(f"{server.url}/m/#sha256={pin}")
    monkeypatch.setenv("ZOO_DOWNLOAD_MAX_JSON_BYTES", "-3")
    with pytest.raises(ValueError, match="ZOO_DOWNLOAD_MAX_JSON_BYTES"):
        zoo.load_pretrained((tmp_path / "site").as_uri() + f"/#sha256={pin}")


def test_a_slow_body_stops_at_the_deadline(hub_home, tmp_path, monkeypatch):
    _publish(tmp_path / "site")
    pin = _pin((tmp_path / "site" / "card.json").read_bytes())
    monkeypatch.setenv("ZOO_DOWNLOAD_DEADLINE", "0.5")
    with HostileServer() as server:
        body = (tmp_path / "site" / "weights.eqx").read_bytes()
        server.serve_folder("/m/", tmp_path / "site", weights_eqx=Route("slow", body))
        start = time.monotonic()
        with pytest.raises(zoo.hub.DownloadLimitError, match="took more than 0.5 s"):
            zoo.load_pretrained(f"{server.url}/m/#sha256={pin}")
        assert time.monotonic() - start < 3.0  # the deadline plus at most one read
    _no_leftovers(hub_home)


def test_interrupted_downloads_are_cleaned(hub_home, tmp_path):
    _publish(tmp_path / "site")
    downloads = hub_home / "downloads"
    downloads.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64]
    names = {
        "dead": f".abcdef0123456789.{host}-{dead.pid}.x1.part",
        "alive": f".abcdef0123456789.{host}-{os.getpid()}.x2.part",
        "old": ".abcdef0123456789.x3.part",  # zoo 0.1's naming: no owner recorded
        "recent": ".abcdef0123456789.x4.part",
    }
    for name in names.values():
        (downloads / name).mkdir()
        (downloads / name / "weights.eqx").write_bytes(b"partial")
    two_days_ago = time.time() - 2 * 86400
    os.utime(downloads / names["old"], (two_days_ago, two_days_ago))
    # Any download cleans up first, even one that then fails.
    with pytest.raises(zoo.hub.DownloadError):
        zoo.load_pretrained((tmp_path / "gone").as_uri() + f"/#sha256={'3' * 64}")
    assert sorted(p.name for p in downloads.iterdir()) == sorted([names["alive"], names["recent"]])
    pin = _pin((tmp_path / "site" / "card.json").read_bytes())
    zoo.load_pretrained((tmp_path / "site").as_uri() + f"/#sha256={pin}")
    left = sorted(p.name for p in downloads.iterdir())
    assert left == sorted([pin, names["alive"], names["recent"]])


def _torch_source(url: str, body: bytes) -> "zoo.hub.TorchSource":
    return zoo.hub.TorchSource(
        arch="resnet20", url=url, sha256=hashlib.sha256(body).hexdigest(), family="timm_vit"
    )


def test_torch_downloads_are_capped_and_deadlined(hub_home, monkeypatch):
    body = b"x" * 600
    with HostileServer() as server:
        server.routes["/endless.safetensors"] = Route("endless")
        server.routes["/slow.safetensors"] = Route("slow", body)
        monkeypatch.setenv("ZOO_DOWNLOAD_MAX_BYTES", "1000")
        source = _torch_source(f"{server.url}/endless.safetensors", body)
        with pytest.raises(zoo.hub.DownloadError, match="more than the 1,000 bytes"):
            zoo.hub.fetch_torch_weights("resnet20.endless", source=source)
        monkeypatch.setenv("ZOO_DOWNLOAD_DEADLINE", "0.5")
        source = _torch_source(f"{server.url}/slow.safetensors", body)
        start = time.monotonic()
        with pytest.raises(zoo.hub.DownloadError, match="took more than 0.5 s"):
            zoo.hub.fetch_torch_weights("resnet20.slow", source=source)
        assert time.monotonic() - start < 3.0
    _no_leftovers(hub_home)


# ---------------------------------------------------------------- redirects


def test_redirects_are_followed_but_verified_and_bounded(hub_home, tmp_path):
    _publish(tmp_path / "site")
    pin = _pin((tmp_path / "site" / "card.json").read_bytes())
    with HostileServer() as server:
        server.serve_folder("/real/", tmp_path / "site")
        for name in ("card.json", "config.json", "weights.eqx", "golden.npz"):
            server.routes[f"/moved/{name}"] = Route("redirect", location=f"/real/{name}")
        zoo.load_pretrained(f"{server.url}/moved/#sha256={pin}")  # a CDN's redirect is fine
        # A redirect to other bytes fails the checksum; a loop and file:// fail to download.
        server.routes["/wrong/card.json"] = Route("redirect", location="/real/config.json")
        with pytest.raises(zoo.hub.ChecksumMismatchError, match="the URL pins"):
            zoo.load_pretrained(f"{server.url}/wrong/#sha256={'1' * 64}")
        server.routes["/loop/card.json"] = Route("redirect", location="/loop/card.json")
        start = time.monotonic()
        with pytest.raises(zoo.hub.DownloadError, match="could not download"):
            zoo.load_pretrained(f"{server.url}/loop/#sha256={'2' * 64}")
        assert time.monotonic() - start < _MAX_SECONDS
        secret = tmp_path / "secret"
        secret.mkdir()
        (secret / "card.json").write_text("{}")
        server.routes["/file/card.json"] = Route(
            "redirect", location=secret.as_uri() + "/card.json"
        )
        with pytest.raises(zoo.hub.DownloadError, match="could not download"):
            zoo.load_pretrained(f"{server.url}/file/#sha256={_pin(b'{}')}")
        server.routes["/ftp/card.json"] = Route("redirect", location="ftp://127.0.0.1:1/card.json")
        with pytest.raises(
            zoo.hub.DownloadError, match="redirect to 'ftp://127.0.0.1:1/card.json' refused"
        ):
            zoo.load_pretrained(f"{server.url}/ftp/#sha256={_pin(b'{}')}")
    _no_leftovers(hub_home)


# ---------------------------------------------------------------- findings 4 and 5


def test_card_names_are_validated_on_read(hub_home, tmp_path):
    _publish(tmp_path / "f")
    card = json.loads((tmp_path / "f" / "card.json").read_text())
    for name in ("../evil.x", "mlp_mnist.a\x1b[2J", 7):
        card["name"] = name
        (tmp_path / "f" / "card.json").write_text(json.dumps(card))
        with pytest.raises(zoo.hub.WeightsError, match="not a valid model card"):
            zoo.model_card(tmp_path / "f")


def test_card_text_is_escaped_when_formatted(hub_home, tmp_path):
    _publish(tmp_path / "f")
    card = json.loads((tmp_path / "f" / "card.json").read_text())
    card["dataset"] = "fashion\x1b]0;owned\x07"
    card["description"] = "fine\nweights sha256  " + "0" * 64 + "  OK\r\u202e"
    (tmp_path / "f" / "card.json").write_text(json.dumps(card))
    text = zoo.model_card(tmp_path / "f").format()
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text and "\u202e" not in text
    assert "fashion\\x1b]0;owned\\x07" in text
    lines = text.splitlines()
    assert sum(line.startswith("weights sha256") for line in lines) == 1  # no forged line
    assert any(line.startswith("description") and "\\nweights sha256" in line for line in lines)


def test_a_url_with_a_query_string_keeps_it_on_every_file(hub_home, tmp_path):
    model, _, _ = _publish(tmp_path / "site")
    pin = _pin((tmp_path / "site" / "card.json").read_bytes())
    with HostileServer() as server:
        server.serve_folder("/m/", tmp_path / "site")
        for route in server.routes.values():
            route.need_query = "v=1&token=a%2Fb"
        loaded, _ = zoo.load_pretrained(f"{server.url}/m/?v=1&token=a%2Fb#sha256={pin}")
        assert sorted(server.hits) == sorted(
            f"/m/{name}?v=1&token=a%2Fb"
            for name in ("card.json", "config.json", "weights.eqx", "golden.npz")
        )
    _assert_same_outputs(loaded, eqx.nn.inference_mode(model))


# ---------------------------------------------------------------- finding 12: non-finite weights


def test_save_pretrained_refuses_non_finite_weights_and_state(hub_home, tmp_path):
    model, state = zoo.create_model("mlp_mnist", **MLP)
    bad = eqx.tree_at(
        lambda m: m.layers[0].weight, model, model.layers[0].weight.at[3, 5].set(jnp.nan)
    )
    card = zoo.ModelCard(name="mlp_mnist.nan", config=MLP)
    with pytest.raises(ValueError, match=r"model\.layers\[0\]\.weight holds 1 NaN or infinite"):
        zoo.save_pretrained(tmp_path / "nan", bad, state, card=card)
    assert not (tmp_path / "nan").exists()
    cnn: dict[str, Any] = {"channels": (4, 4, 4, 4)}
    model, state = zoo.create_model("cnn_mnist", **cnn)
    index = model.norms[0].batch_state_index
    mean, var = state.get(index)
    state = state.set(index, (mean, var.at[0].set(jnp.inf)))
    with pytest.raises(ValueError, match=r"state\[.*norms\[0\].*\] holds 1 NaN or infinite"):
        zoo.save_pretrained(
            tmp_path / "inf", model, state, card=zoo.ModelCard(name="cnn_mnist.inf", config=cnn)
        )
