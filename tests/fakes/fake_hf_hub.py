"""Minimal offline stand-in for the Hugging Face Hub, enough for huggingface_hub's
hf_hub_download / snapshot_download / HfApi.model_info / repo_info / list_repo_files /
list_repo_tree / file_exists.  Stdlib only.  Binds 127.0.0.1.

    python fake_hf_hub.py --root DIR [--port 8765] [--cdn-port 8766] [--token T]
    python fake_hf_hub.py --root DIR --port 0 --cdn-port -1   # free ports, CDN on its own origin
    HF_ENDPOINT=http://127.0.0.1:8765 python -c "from huggingface_hub import hf_hub_download; ..."

DIR layout: DIR/<org>/<repo>/<files...>  (models only).  Every repo has one commit whose
40-hex sha is derived from its content; revision "main" or that sha resolve to it.
Files >= --lfs-threshold bytes (default 1 MiB) or named *.gguf/*.safetensors/*.bin are
treated as LFS: HEAD/GET /resolve answers 302 to the "CDN" (a second port = a different
origin, like the real Hub's CDN) with X-Linked-Etag/X-Linked-Size; small files are served
inline with ETag = git blob sha1.  Range requests are honoured (206).  --fail-once-after N cuts
the first full GET of each file after N bytes (resume tests).  With --token,
/api and /resolve require "Authorization: Bearer T" (401 + X-Error-Code: GatedRepo otherwise).
--omit-header H drops a response header everywhere (error-path tests).
GET /_requests returns the request log (method, path, range, auth?) for assertions.

Copied from the lab's infra/fake_hf_hub.py; adapted for tests: `--port 0` binds a free port and
`--cdn-port -1` a free port for the CDN, and the first stdout line (JSON) names the bound ones.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlparse

LFS_EXT = (".gguf", ".safetensors", ".bin", ".pt")
LOG: list[dict[str, Any]] = []
LOG_LOCK = threading.Lock()
DROPPED: set[str] = set()
OMIT: set[str] = set()


class Repo:
    def __init__(self, root: str, repo_id: str, lfs_threshold: int) -> None:
        self.id, self.dir = repo_id, os.path.join(root, repo_id)
        self.files: dict[str, dict[str, Any]] = {}
        for dp, _, fns in os.walk(self.dir):
            for fn in fns:
                p = os.path.join(dp, fn)
                rel = os.path.relpath(p, self.dir).replace(os.sep, "/")
                size = os.path.getsize(p)
                sha256, sha1 = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
                with open(p, "rb") as f:
                    for b in iter(lambda: f.read(1 << 20), b""):
                        sha256.update(b)
                        sha1.update(b)
                lfs = size >= lfs_threshold or fn.endswith(LFS_EXT)
                self.files[rel] = {
                    "path": p,
                    "size": size,
                    "sha256": sha256.hexdigest(),
                    "oid": sha1.hexdigest(),
                    "lfs": lfs,
                }
        h = hashlib.sha1()
        for rel in sorted(self.files):
            h.update(f"{rel}\0{self.files[rel]['sha256']}\n".encode())
        self.sha = h.hexdigest()
        self.mtime = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())

    def tree_entry(self, rel: str) -> dict[str, Any]:
        f = self.files[rel]
        e = {"type": "file", "oid": f["oid"], "size": f["size"], "path": rel}
        if f["lfs"]:
            e["lfs"] = {"oid": f["sha256"], "size": f["size"], "pointerSize": 134}
        return e


def make_handler(
    args: argparse.Namespace, repos: dict[str, Repo], cdn_base: str
) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def send_header(self, keyword: str, value: str) -> None:
            # --omit-header: drop a header to test client error paths
            if keyword.lower() not in OMIT:
                super().send_header(keyword, value)

        # ---------------------------------------------------------------- helpers
        def _json(self, code: int, obj: Any, extra: dict[str, str] | None = None) -> None:
            b = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(b)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(b)

        def _err(
            self, code: int, error_code: str, msg: str, extra: dict[str, str] | None = None
        ) -> None:
            h = {"X-Error-Code": error_code, "X-Error-Message": msg}
            h.update(extra or {})
            self._json(code, {"error": msg}, h)

        def _file(self, path: str, size: int, headers: dict[str, str]) -> None:
            start, end, code = 0, size - 1, 200
            rng = self.headers.get("Range")
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng or "")
            if m and size > 0:
                if m.group(1):
                    start = int(m.group(1))
                    end = int(m.group(2)) if m.group(2) else size - 1
                else:
                    start = max(size - int(m.group(2)), 0)
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                end = min(end, size - 1)
                code = 206
            self.send_response(code)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start + 1))
            if code == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if self.command == "HEAD":
                return
            drop_at = None
            if args.fail_once_after and code == 200 and path not in DROPPED:
                DROPPED.add(path)
                drop_at = args.fail_once_after
            with open(path, "rb") as f:
                f.seek(start)
                left = end - start + 1
                if drop_at is not None:  # simulate a connection cut mid-body, once per file
                    self.wfile.write(f.read(min(drop_at, left)))
                    self.wfile.flush()
                    self.close_connection = True
                    return
                while left > 0:
                    b = f.read(min(1 << 20, left))
                    if not b:
                        break
                    self.wfile.write(b)
                    left -= len(b)
                    if args.throttle:
                        time.sleep(len(b) / args.throttle)

        def _authorized(self) -> bool:
            return not args.token or self.headers.get("Authorization") == f"Bearer {args.token}"

        def _log(self) -> None:
            with LOG_LOCK:
                LOG.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "range": self.headers.get("Range"),
                        "auth": bool(self.headers.get("Authorization")),
                        "port": getattr(self.server, "server_port", 0),
                    }
                )

        # ---------------------------------------------------------------- routing
        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            self._log()
            u = urlparse(self.path)
            path, q = unquote(u.path), parse_qs(u.query)
            if path == "/_requests":
                return self._json(200, LOG)
            m = re.fullmatch(r"/cdn/([0-9a-f]{64})", path)
            if m:  # the "CDN": content-addressed, no auth, no X-Repo-Commit
                for r in repos.values():
                    for f in r.files.values():
                        if f["sha256"] == m.group(1):
                            h = {"ETag": f'"{f["sha256"]}"'}
                            if (
                                not args.cdn_port
                            ):  # same-origin redirects are FOLLOWED by huggingface_hub's HEAD,
                                h["X-Repo-Commit"] = (
                                    r.sha
                                )  # so the target must carry X-Repo-Commit too
                            return self._file(f["path"], f["size"], h)
                return self._json(404, {"error": "no such blob"})
            m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
            if m:
                return self.model_info(m.group(1), m.group(2) or "main", q)
            m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)
            if m:
                return self.tree(m.group(1), m.group(2), m.group(3) or "", q)
            m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if m:
                return self.resolve(m.group(1), m.group(2), m.group(3))
            self._json(404, {"error": f"not implemented: {path}"})

        def _repo_rev(self, repo_id: str, rev: str) -> Repo | None:
            if not self._authorized():
                self._err(401, "GatedRepo", "Access to model is restricted")
                return None
            r = repos.get(repo_id)
            if r is None:
                self._err(404, "RepoNotFound", "Repository not found")
                return None
            if rev not in ("main", r.sha):
                self._err(404, "RevisionNotFound", "Invalid rev id: " + rev)
                return None
            return r

        def model_info(self, repo_id: str, rev: str, q: dict[str, list[str]]) -> None:
            r = self._repo_rev(repo_id, rev)
            if r is None:
                return
            blobs = q.get("blobs", ["false"])[0].lower() == "true"
            sib = []
            for rel in sorted(r.files):
                s: dict[str, Any] = {"rfilename": rel}
                if blobs:
                    f = r.files[rel]
                    s.update(size=f["size"], blobId=f["oid"])
                    if f["lfs"]:
                        s["lfs"] = {"sha256": f["sha256"], "size": f["size"], "pointerSize": 134}
                sib.append(s)
            ggufs = [f for rel, f in r.files.items() if rel.endswith(".gguf")]
            info = {
                "_id": r.sha[:24],
                "id": r.id,
                "modelId": r.id,
                "author": r.id.split("/")[0],
                "sha": r.sha,
                "lastModified": r.mtime,
                "createdAt": r.mtime,
                "private": False,
                "gated": "manual" if args.token else False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": ["gguf"] if ggufs else [],
                "library_name": "gguf" if ggufs else None,
                "siblings": sib,
                "usedStorage": sum(f["size"] for f in r.files.values()),
            }
            if ggufs:
                info["gguf"] = {"total": 0, "architecture": "llama", "context_length": 2048}
            self._json(200, info)

        def tree(self, repo_id: str, rev: str, sub: str, q: dict[str, list[str]]) -> None:
            r = self._repo_rev(repo_id, rev)
            if r is None:
                return
            recursive = q.get("recursive", ["false"])[0].lower() == "true"
            prefix = sub.rstrip("/") + "/" if sub else ""
            out, dirs = [], set()
            for rel in sorted(r.files):
                if not rel.startswith(prefix):
                    continue
                rest = rel[len(prefix) :]
                parts = rest.split("/")
                for i in range(1, len(parts)):  # directories on the way
                    d = prefix + "/".join(parts[:i])
                    if (recursive or i == 1) and d not in dirs:
                        dirs.add(d)
                        out.append(
                            {
                                "type": "directory",
                                "oid": hashlib.sha1(d.encode()).hexdigest(),
                                "size": 0,
                                "path": d,
                            }
                        )
                if recursive or len(parts) == 1:
                    out.append(r.tree_entry(rel))
            if sub and not out:
                return self._err(404, "EntryNotFound", f"{sub} does not exist on {rev}")
            self._json(200, out)

        def resolve(self, repo_id: str, rev: str, rel: str) -> None:
            r = self._repo_rev(repo_id, rev)
            if r is None:
                return
            f = r.files.get(rel)
            common = {"X-Repo-Commit": r.sha}
            if f is None:
                return self._err(404, "EntryNotFound", f"{rel} does not exist", common)
            if f["lfs"]:
                h = dict(common)
                h.update(
                    {
                        "X-Linked-Etag": f'"{f["sha256"]}"',
                        "X-Linked-Size": str(f["size"]),
                        "ETag": f'"{f["sha256"]}"',
                        "Location": f"{cdn_base}/cdn/{f['sha256']}?name={quote(rel)}",
                        "Content-Length": "0",
                    }
                )
                self.send_response(302)
                for k, v in h.items():
                    self.send_header(k, v)
                self.end_headers()
                return
            self._file(f["path"], f["size"], {"ETag": f'"{f["oid"]}"', **common})

    return H


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument(
        "--cdn-port",
        type=int,
        default=0,
        help="0 = serve /cdn on the main port (same origin), -1 = on a free port",
    )
    ap.add_argument("--token", default=None)
    ap.add_argument("--lfs-threshold", type=int, default=1 << 20)
    ap.add_argument(
        "--throttle", type=float, default=0, help="bytes/s per download (0 = unlimited)"
    )
    ap.add_argument(
        "--fail-once-after",
        type=int,
        default=0,
        help="cut the first full (non-Range) GET of each file after N bytes, to test resume",
    )
    ap.add_argument(
        "--omit-header",
        action="append",
        default=[],
        help="never send this response header (e.g. X-Repo-Commit, ETag); repeatable",
    )
    args = ap.parse_args()
    OMIT.update(h.lower() for h in args.omit_header)
    repos = {}
    for org in sorted(os.listdir(args.root)):
        if os.path.isdir(os.path.join(args.root, org)):
            for name in sorted(os.listdir(os.path.join(args.root, org))):
                if os.path.isdir(os.path.join(args.root, org, name)):
                    repos[f"{org}/{name}"] = Repo(args.root, f"{org}/{name}", args.lfs_threshold)
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), BaseHTTPRequestHandler)
    srv.daemon_threads = True
    port = srv.server_address[1]
    cdn = None
    if args.cdn_port:
        cdn = ThreadingHTTPServer(("127.0.0.1", max(args.cdn_port, 0)), BaseHTTPRequestHandler)
        cdn.daemon_threads = True
    cdn_base = f"http://127.0.0.1:{cdn.server_address[1] if cdn else port}"
    H = make_handler(args, repos, cdn_base)
    srv.RequestHandlerClass = H
    if cdn is not None:
        cdn.RequestHandlerClass = H
        threading.Thread(target=cdn.serve_forever, daemon=True).start()
    print(
        json.dumps(
            {
                "endpoint": f"http://127.0.0.1:{port}",
                "cdn": cdn_base,
                "repos": {k: v.sha for k, v in repos.items()},
            }
        ),
        flush=True,
    )
    srv.serve_forever()


if __name__ == "__main__":
    main()
