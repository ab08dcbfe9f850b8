"""A minimal Docker Registry v2 token server (distribution "token" auth) for the registry fixtures.

  python token_server.py --dir DIR --port 5003 --user alice:s3cret [--anonymous-pull]

Copied from the lab recipe (shared/lab/infra/token_server.py). On start it writes DIR/key.pem and
DIR/cert.pem (self-signed RSA; the registry's auth.token.rootcertbundle points at cert.pem), then
serves GET /token?service=..&scope=.. with RS256 JWTs whose header carries x5c=[cert], and
GET /requests listing the scopes asked for. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def main() -> None:
    """Parse arguments, write the certificate, serve until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--port", type=int, default=5003)
    parser.add_argument("--issuer", default="lab-token-issuer")
    parser.add_argument("--service", default="lab-registry")
    parser.add_argument("--user", action="append", default=[], help="user:password (repeatable)")
    parser.add_argument("--anonymous-pull", action="store_true")
    parser.add_argument("--ttl", type=int, default=300)
    args = parser.parse_args()

    os.makedirs(args.dir, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, args.issuer)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    temp = os.path.join(args.dir, "cert.pem.tmp")
    with open(temp, "wb") as stream:
        stream.write(pem)
    os.replace(temp, os.path.join(args.dir, "cert.pem"))  # readers never see half a file
    x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
    users = dict(user.split(":", 1) for user in args.user)
    lock = threading.Lock()
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *values: Any) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/requests":
                with lock:
                    return self._send(200, {"requests": list(seen)})
            if url.path != "/token":
                return self._send(404, {"error": "not found"})
            query = parse_qs(url.query)
            who = None
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                if users.get(user) != password:
                    body = {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
                    return self._send(401, body)
                who = user
            access = []
            for scope in query.get("scope", []):
                for item in scope.split(" "):
                    kind, _, rest = item.partition(":")
                    resource, _, actions = rest.rpartition(":")
                    wanted = [action for action in actions.split(",") if action]
                    anonymous = [a for a in wanted if a == "pull" and args.anonymous_pull]
                    granted = wanted if who else anonymous
                    access.append({"type": kind, "name": resource, "actions": granted})
            with lock:
                seen.append({"user": who, "scope": query.get("scope", [])})
            if who is None and not args.anonymous_pull:
                body = {"errors": [{"code": "UNAUTHORIZED", "message": "credentials required"}]}
                return self._send(401, body)
            issued = int(time.time())
            claims = {
                "iss": args.issuer,
                "sub": who or "",
                "aud": query.get("service", [args.service])[0],
                "exp": issued + args.ttl,
                "nbf": issued - 10,
                "iat": issued,
                "jti": secrets.token_hex(8),
                "access": access,
            }
            token = jwt.encode(claims, key, algorithm="RS256", headers={"x5c": x5c})
            return self._send(200, {"token": token, "access_token": token, "expires_in": args.ttl})

        def _send(self, code: int, document: dict[str, Any]) -> None:
            body = json.dumps(document).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"token server on http://127.0.0.1:{args.port}/token", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
