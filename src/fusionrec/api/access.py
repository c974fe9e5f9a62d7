"""Who is calling, for which users, and how often: the transformer's access rules (docs/serving.md,
"Callers").

A caller is identified once per request, from what the settings trust (:class:`fusionrec.config.AuthSettings`):

- ``api_key`` mode: ``Authorization: Bearer <key>`` or ``x-api-key: <key>``, matched by its SHA-256 against
  the configured callers, or against the service key file (locally made once, owner-only).
- ``mesh`` mode: the mesh has authenticated the caller. A workload's mTLS principal arrives in
  ``x-forwarded-client-cert`` (``URI=spiffe://...``; see :func:`caller_principal` for which element is
  believed); an end user's verified JWT subject in ``auth.user_header`` (Istio's RequestAuthentication
  writes it from the token, replacing what a client sent).

Then each row is authorised: a service may name any user; an end user only themselves (their own
``user_id``, or none). What an answer reveals is limited to what the caller could ask directly:

- ``exclude_seen`` over a ``candidates`` list tells, item by item, whether the user has seen it. Only a
  caller allowed to read that user's history may combine them (the user themselves, a service with the
  ``history`` grant); for others the pair is a 403.
- To an end user, an unknown user is not told apart from a known one: their rows are served as
  anonymous (popular items) instead of a 404 that would confirm which ids exist.

Rate limits: a token bucket per caller (services by name or principal, end users by subject), a 429
with ``Retry-After`` when it is empty.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from fusionrec.config import AuthSettings, Settings
from fusionrec.errors import ConfigError, Forbidden, TooManyRequests, Unauthorized
from fusionrec.io import make_secret_file

KEY_FILE = "serving/api.key"  # under paths.artifacts, locally
MIN_KEY_CHARS = 32
_SPIFFE = re.compile(r"URI=(spiffe://[A-Za-z0-9._~%!$&'()*+,;=:@/-]{1,512})")


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: its name (for rate limits and logs), whether it may name any user, the one
    user it may ask for otherwise, and whether it may learn which items a user has seen."""

    name: str
    any_user: bool
    user_id: str | None = None
    history: bool = False

    def may_read_history(self, user_id: str) -> bool:
        return self.history or (self.user_id is not None and user_id == self.user_id)


def key_file(settings: Settings) -> Path:
    """Where the service key lives: ``auth.key_file``, or the local default under the artifacts folder."""
    auth = settings.serving.auth
    return Path(auth.key_file) if auth.key_file else Path(settings.paths.artifacts) / KEY_FILE


def ensure_key_file(settings: Settings) -> Path:
    """The service key file, made once (random, owner-only) when it does not exist yet on the local profile.
    On the cluster profile the key comes from a Secret, and a missing one is an error, never a new key.

    Raises:
        ConfigError: the key file is missing on the cluster profile, or its key is shorter than 32 characters.
    """
    path = key_file(settings)
    if not path.exists():
        if settings.profile != "local":
            raise ConfigError(
                f"serving.auth.key_file {path} does not exist; mount the Secret that holds the "
                "transformer's service key there"
            )
        make_secret_file(path, secrets.token_urlsafe(32))
    read_key(path)
    return path


def read_key(path: Path) -> str:
    """The key in ``path``; refused when it is shorter than :data:`MIN_KEY_CHARS`.

    Raises:
        ConfigError: unreadable, or too short to be a key.
    """
    try:
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: the service key cannot be read ({type(e).__name__})") from None
    if len(key) < MIN_KEY_CHARS:
        raise ConfigError(
            f"{path}: the service key is shorter than {MIN_KEY_CHARS} characters; write a random one "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return key


def client_headers(settings: Settings) -> dict[str, str]:
    """The headers a local client (the CLI, a smoke check) sends to be the service caller."""
    return {"authorization": f"Bearer {read_key(key_file(settings))}"}


def _xfcc_uris(header: str) -> list[str | None]:
    """The ``URI=`` of each element of an x-forwarded-client-cert header, in order (None: an element without
    one). Elements are comma-separated; a comma inside a quoted value does not split."""
    elements, current, quoted = [], [], False
    for ch in header:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            elements.append("".join(current))
            current = []
        else:
            current.append(ch)
    elements.append("".join(current))
    out = []
    for element in elements:
        m = _SPIFFE.search(element)
        out.append(m.group(1) if m else None)
    return out


def caller_principal(xfcc: str, gateways: tuple[str, ...] = ()) -> str | None:
    """Who called, from the x-forwarded-client-cert header the sidecars build. Each proxy appends the peer it
    authenticated, so only the last element is this pod's own sidecar's word (what a client sends first
    is not believed). When that peer is a trusted gateway (Knative's data path: the local gateway, the
    activator), the element the gateway appended before it names the caller behind it."""
    uris = _xfcc_uris(xfcc[:8192])
    if not uris or uris[-1] is None:
        return None
    if uris[-1] in gateways:
        return uris[-2] if len(uris) >= 2 else None
    return uris[-1]


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


class Authenticator:
    """Turns a request's headers into a :class:`Caller` (or a 401), by the settings' mode."""

    def __init__(self, settings: Settings) -> None:
        self.auth: AuthSettings = settings.serving.auth
        self.keys: dict[str, Caller] = {
            c.key_sha256: Caller(
                c.name, c.role == "service", c.user_id if c.role == "user" else None, c.history and c.role == "service"
            )
            for c in self.auth.callers
        }
        if self.auth.mode == "api_key":
            self.keys[_digest(read_key(ensure_key_file(settings)))] = Caller("service-key", True, None, False)

    def caller(self, headers: dict[str, str] | None) -> Caller:
        """Raises: Unauthorized: no identity the settings trust."""
        h = {k.lower(): v for k, v in (headers or {}).items()}
        if self.auth.mode == "mesh":
            return self._mesh(h)
        raw = h.get("x-api-key")
        bearer = h.get("authorization", "")
        if raw is None and bearer[:7].lower() == "bearer ":
            raw = bearer[7:]
        if not raw:
            raise Unauthorized("no API key: send 'Authorization: Bearer <key>' (docs/serving.md, Callers)")
        digest = _digest(raw.strip()[:512])
        for known, caller in self.keys.items():
            if hmac.compare_digest(known, digest):
                return caller
        raise Unauthorized("the API key is not valid")

    def _mesh(self, h: dict[str, str]) -> Caller:
        principal = caller_principal(h.get("x-forwarded-client-cert", ""), self.auth.gateway_principals)
        if principal in self.auth.service_principals:
            return Caller(principal, True, None, principal in self.auth.history_principals)
        subject = h.get(self.auth.user_header, "").strip()
        if subject and len(subject) <= 128:
            return Caller(f"user:{subject}", False, subject, False)
        raise Unauthorized(
            "no authenticated caller: a trusted service principal or a verified end-user token is required"
        )


def authorise(caller: Caller, rows) -> None:
    """Check every row against what ``caller`` may ask; for an end user, rows naming themselves get their
    own id (a row without a user stays anonymous).

    Raises:
        Forbidden: a row names another user, or asks for seen items the caller may not learn.
    """
    for n, row in enumerate(rows):
        uid = row.user_id
        if uid is not None and not caller.any_user and uid != caller.user_id:
            raise Forbidden(f"instances[{n}]: this caller may only ask for its own user")
        if uid is not None and row.exclude_seen and row.candidates is not None and not caller.may_read_history(uid):
            raise Forbidden(
                f"instances[{n}]: exclude_seen with candidates tells which items the user has seen; this "
                "caller may not learn another user's history (send exclude_seen: false)"
            )


class RateLimiter:
    """Token buckets per caller name, at most ``max_callers`` remembered (the least recently seen go)."""

    def __init__(self, auth: AuthSettings, max_callers: int = 100_000, clock=time.monotonic) -> None:
        self.auth, self.max_callers, self.clock = auth, max_callers, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, caller: Caller) -> None:
        """Raises: TooManyRequests: the caller's bucket is empty (with the seconds until a token is back)."""
        rate, burst = (
            (self.auth.service_rate_per_s, self.auth.service_burst)
            if caller.any_user
            else (self.auth.user_rate_per_s, self.auth.user_burst)
        )
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.pop(caller.name, (float(burst), now))
            tokens = min(float(burst), tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[caller.name] = (tokens, now)
                raise TooManyRequests(
                    "rate limit exceeded for this caller; retry later",
                    retry_after=max(1, math.ceil((1.0 - tokens) / rate)),
                )
            self._buckets[caller.name] = (tokens - 1.0, now)
            while len(self._buckets) > self.max_callers:
                self._buckets.popitem(last=False)
