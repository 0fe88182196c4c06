"""A small Docker token server for the tests (distribution token spec, ES256 JWTs with x5c).

It runs in a thread on 127.0.0.1, checks Basic credentials against its users, and grants the
scopes asked for to known users (``grant`` can narrow that to test partial grants).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _signing_cert() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "regcast-test-token-signer")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


class TokenServer:
    def __init__(
        self,
        directory: Path,
        users: dict[str, str],
        service: str = "regcast-test",
        issuer: str = "regcast-test-issuer",
        expires_in: int = 300,
    ) -> None:
        self.users = users
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        self.requests: list[dict[str, object]] = []
        self.grant: Callable[[str | None, list[str]], list[str]] | None = None
        self.refresh_tokens: dict[str, str] = {}  # OAuth2 refresh token -> user (docker's identitytoken)
        self.oauth = True  # False: POST answers ``post_refusal`` (404), as a token server that knows only GET
        self.post_refusal: tuple[int, dict[str, object]] = (
            404,
            {"errors": [{"code": "NOT_FOUND", "message": "GET only"}]},
        )
        self.answer_fields: dict[str, object] = {}  # merged into every token answer (odd expires_in, no token...)
        self.refused = 0  # token requests refused for bad credentials (not in ``requests``)
        self.posts_refused = 0  # OAuth2 POSTs answered ``post_refusal``
        self.token_field = "token"  # "access_token": the answer names its token so (OAuth2 style), not "token"
        self.anonymous_pull = False  # True: anonymous token requests are granted pull (public repositories)
        self._key, self._cert = _signing_cert()
        self.cert_path = directory / "token-signer.pem"
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode()
        server = self
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(server))
        self.port = self._httpd.server_address[1]
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> TokenServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def issue(self, user: str | None, scopes: list[str]) -> str:
        access = []
        granted = self.grant(user, scopes) if self.grant else scopes
        for s in granted:
            kind, _, rest = s.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "exp": now + self.expires_in,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"x5c": [self._x5c]})

    @staticmethod
    def _handler(server: TokenServer) -> type[BaseHTTPRequestHandler]:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                user = None
                header = self.headers.get("Authorization", "")
                if header.startswith("Basic "):
                    name, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    if server.users.get(name) != password:
                        server.refused += 1
                        self._send(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
                        return
                    user = name
                scopes = query.get("scope", [])
                if not user:  # anonymous: nothing, or pull only where ``anonymous_pull`` (a public repository)
                    scopes = (
                        [s.rpartition(":")[0] + ":pull" for s in scopes if "pull" in s] if server.anonymous_pull else []
                    )
                server.requests.append({"user": user, "scopes": scopes, "service": query.get("service")})
                token = server.issue(user, scopes)
                now = dt.datetime.now(dt.UTC).isoformat()
                self._send(
                    200,
                    {
                        server.token_field: token,
                        "expires_in": server.expires_in,
                        "issued_at": now,
                        **server.answer_fields,
                    },
                )

            def do_POST(self) -> None:
                """The OAuth2 variant: ``grant_type=refresh_token`` form POST, scopes space-separated."""
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                if not server.oauth:
                    server.posts_refused += 1
                    self._send(*server.post_refusal)
                    return
                user = server.refresh_tokens.get((form.get("refresh_token") or [""])[0])
                if (form.get("grant_type") or [""])[0] != "refresh_token" or user is None:
                    self._send(401, {"error": "invalid_grant"})
                    return
                scopes = (form.get("scope") or [""])[0].split()
                server.requests.append(
                    {"user": user, "scopes": scopes, "service": form.get("service"), "method": "POST", "form": form}
                )
                token = server.issue(user, scopes)
                answer = {"access_token": token, "expires_in": server.expires_in, "scope": " ".join(scopes)}
                self._send(200, {**answer, **server.answer_fields})

            def _send(self, status: int, body: dict[str, object]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        return Handler
