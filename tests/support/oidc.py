"""A real authorization server for the OAuth tests: oidc-provider (npm) on a free port."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from support.ports import free_port
from support.processes import stop_process

PROVIDER = Path(__file__).parent / "oidc"
#: Where the public client "app" is sent back to with its code: nothing listens there, the
#: user agent below reads the code off the redirect instead.
APP_REDIRECT = "http://127.0.0.1:9/callback"


def provider_missing() -> str | None:
    """Why oidc-provider cannot run here, or None. `make test` installs it."""
    if shutil.which("node") is None:
        return "node is not installed (make test installs it)"
    if not (PROVIDER / "node_modules" / "oidc-provider").is_dir():
        return f"oidc-provider is not installed: make test runs npm ci --prefix {PROVIDER}"
    return None


def signing_keys() -> dict[str, object]:
    """A new RSA signing key with a key id of its own, as a JWK set with its private part."""
    key = json.loads(RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, 2048)))
    return {"keys": [{**key, "kid": str(uuid.uuid4()), "use": "sig", "alg": "RS256"}]}


@dataclass
class AuthorizationServer:
    """oidc-provider issuing JWT access tokens by client credentials (clients in
    oidc/server.js). rotate() restarts it on the same port with a new signing key."""

    workdir: Path
    default_resource: str = "http://127.0.0.1/"
    token_ttl: int = 300
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        keys = self.workdir / "keys.json"
        keys.write_text(json.dumps(signing_keys()))
        log = self.workdir / f"oidc-{self.port}.log"
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "DEFAULT_RESOURCE": self.default_resource,
            "TOKEN_TTL": str(self.token_ttl),
        }
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                ["node", str(PROVIDER / "server.js"), str(self.port), str(keys)],
                cwd=PROVIDER,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"oidc-provider exited:\n{log.read_text(errors='replace')}")
            try:
                if httpx.get(f"{self.issuer}/jwks", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"oidc-provider did not start:\n{log.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def rotate(self) -> None:
        """Sign with a new key from now on; the old one is no longer published."""
        self.stop()
        self.start()

    def key_ids(self) -> list[str]:
        return [key["kid"] for key in httpx.get(f"{self.issuer}/jwks").json()["keys"]]

    def token(
        self,
        client: str = "service",
        scope: str = "contexts:read contexts:write",
        resource: str | None = None,
    ) -> str:
        """An access token by client credentials, for `resource` (RFC 8707)."""
        form = {"grant_type": "client_credentials", "scope": scope}
        if resource is not None:
            form["resource"] = resource
        r = httpx.post(f"{self.issuer}/token", data=form, auth=(client, f"{client}-secret"))
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def log_in(self, authorization_url: str, user: str = "alice") -> dict[str, str]:
        """Be the user agent of an authorization request: log `user` in at the provider's
        (development) login and consent pages, and return the parameters it redirects back
        to APP_REDIRECT with (code, state, iss)."""
        with httpx.Client(follow_redirects=False, timeout=10) as agent:
            r = agent.get(authorization_url)
            for _ in range(20):
                if r.is_redirect:
                    location = r.headers["location"]
                    if location.startswith(APP_REDIRECT):
                        query = parse_qs(urlsplit(location).query)
                        return {name: values[0] for name, values in query.items()}
                    r = agent.get(httpx.URL(str(r.url)).join(location))
                    continue
                assert r.status_code == 200, r.text
                action = re.search(r'<form[^>]*action="([^"]+)"', r.text)
                assert action is not None, r.text
                fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', r.text))
                if 'name="login"' in r.text:
                    fields.update(login=user, password="any")
                r = agent.post(httpx.URL(str(r.url)).join(action.group(1)), data=fields)
            raise AssertionError("the authorization request never came back to the app")
