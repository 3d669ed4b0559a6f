"""A fake Supabase JWKS endpoint: a real HTTP server on loopback serving public keys.

`JWKSServer` generates an RSA and an EC key pair, serves their public halves as a JWK set at
`/auth/v1/.well-known/jwks.json` and signs tokens with the private halves, like the auth
server of a Supabase project with asymmetric JWT signing keys. It counts fetches, so tests
can see the key set being cached.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

JWKS_PATH = "/auth/v1/.well-known/jwks.json"


class JWKSServer:
    def __init__(self) -> None:
        self.rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec_key = ec.generate_private_key(ec.SECP256R1())
        rsa_jwk = RSAAlgorithm.to_jwk(self.rsa_key.public_key(), as_dict=True)
        ec_jwk = ECAlgorithm.to_jwk(self.ec_key.public_key(), as_dict=True)
        self.jwks = {
            "keys": [
                {**rsa_jwk, "kid": "rsa-1", "alg": "RS256", "use": "sig"},
                {**ec_jwk, "kid": "ec-1", "alg": "ES256", "use": "sig"},
            ]
        }
        self.fetches = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path != JWKS_PATH:
                    self.send_error(404)
                    return
                server.fetches += 1
                body = json.dumps(server.jwks).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{JWKS_PATH}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> JWKSServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def sign(
        self, claims: dict[str, Any], *, algorithm: str = "RS256", kid: str | None = None
    ) -> str:
        key = self.rsa_key if algorithm == "RS256" else self.ec_key
        kid = kid or ("rsa-1" if algorithm == "RS256" else "ec-1")
        return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})


def supabase_claims(
    sub: str, *, email: str = "", lifetime: int = 3600, **extra: Any
) -> dict[str, Any]:
    """The claims of a Supabase access token for user `sub`."""
    now = int(time.time())
    claims = {
        "sub": sub,
        "aud": "authenticated",
        "role": "authenticated",
        "iat": now,
        "exp": now + lifetime,
        "email": email,
    }
    return {**claims, **extra}
