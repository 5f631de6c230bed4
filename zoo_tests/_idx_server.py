"""Test helpers: small IDX files written independently of zoo, and a local HTTP mirror."""

import gzip
import http.server
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np


def idx_bytes(array: np.ndarray, *, type_code: int = 0x08) -> bytes:
    """The uncompressed IDX encoding of a uint8 array (magic, big-endian dims, data)."""
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def idx_gz(array: np.ndarray, **kwargs) -> bytes:
    # mtime=0: the same array always gives the same bytes, hence the same MD5.
    return gzip.compress(idx_bytes(array, **kwargs), mtime=0)


def tiny_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` random 28x28 uint8 images and labels in 0..9."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    return images, labels


def write_split(folder: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    prefix = "train" if split == "train" else "t10k"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(idx_gz(images))
    (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(idx_gz(labels))


Mode = Literal["ok", "404", "truncate"]


@dataclass
class IdxServer:
    """A threaded HTTP server on 127.0.0.1 serving `files[path] = (mode, body)`.

    `"truncate"` announces the full Content-Length but sends half the body, then closes.
    Every GET's path is appended to `hits`.
    """

    files: dict[str, tuple[Mode, bytes]] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)

    def __enter__(self) -> "IdxServer":
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.hits.append(self.path)
                mode, body = server.files.get(self.path, ("404", b""))
                if mode == "404":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if mode == "ok" else body[: len(body) // 2])
                if mode == "truncate":
                    self.close_connection = True

            def log_message(self, format, *args):
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def url(self, prefix: str) -> str:
        """The base URL of the mirror at `prefix` (e.g. `"/a/"`)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{prefix}"
