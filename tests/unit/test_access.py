"""Who may call the transformer, for which users, how often (fusionrec.api.access)."""

from __future__ import annotations

import hashlib

import pytest

from fusionrec.api.access import Authenticator, Caller, RateLimiter, authorise, client_headers, ensure_key_file
from fusionrec.config import load_settings
from fusionrec.errors import ConfigError, Forbidden, TooManyRequests, Unauthorized
from fusionrec.recommender import Row

USER_KEY = "end-user-key-0123456789abcdefghijklmnop"
HISTORY_KEY = "history-service-key-0123456789abcdefghij"


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _settings(tmp_path, **env):
    callers = (
        f"[{{name: shopper, key_sha256: {_sha(USER_KEY)}, role: user, user_id: u1}}, "
        f"{{name: crm, key_sha256: {_sha(HISTORY_KEY)}, history: true}}]"
    )
    base = {"FUSIONREC__PATHS__ARTIFACTS": str(tmp_path / "artifacts"), "FUSIONREC__SERVING__AUTH__CALLERS": callers}
    return load_settings(env={**base, **env})


def test_the_local_service_key_is_made_once_owner_only_and_identifies_a_service(tmp_path):
    settings = _settings(tmp_path)
    path = ensure_key_file(settings)
    assert path == tmp_path / "artifacts" / "serving" / "api.key" and path.stat().st_mode & 0o077 == 0
    assert ensure_key_file(settings).read_text() == path.read_text()  # not replaced
    auth = Authenticator(settings)
    service = auth.caller(client_headers(settings))
    assert service.any_user and not service.history
    assert auth.caller({"x-api-key": path.read_text()}) == service


@pytest.mark.parametrize(
    "headers,words",
    [
        ({}, "no API key"),
        ({"authorization": "Bearer not-a-key"}, "not valid"),
        ({"authorization": "Basic dXNlcjpwYXNz"}, "no API key"),
        ({"x-api-key": "x" * 100_000}, "not valid"),
    ],
)
def test_a_request_without_a_valid_key_is_a_401(tmp_path, headers, words):
    with pytest.raises(Unauthorized, match=words):
        Authenticator(_settings(tmp_path)).caller(headers)


def test_configured_callers_by_the_hash_of_their_key(tmp_path):
    auth = Authenticator(_settings(tmp_path))
    shopper = auth.caller({"authorization": f"Bearer {USER_KEY}"})
    assert shopper == Caller("shopper", False, "u1", False)
    crm = auth.caller({"Authorization": f"bearer {HISTORY_KEY}"})
    assert crm.any_user and crm.history


def test_a_short_or_missing_key_file_is_refused(tmp_path):
    short = tmp_path / "short.key"
    short.write_text("abc")
    with pytest.raises(ConfigError, match="shorter than 32"):
        Authenticator(_settings(tmp_path, FUSIONREC__SERVING__AUTH__KEY_FILE=str(short)))
    with pytest.raises(ConfigError, match="does not exist"):  # the cluster's Secret missing: never a new key
        Authenticator(
            _settings(
                tmp_path,
                FUSIONREC_PROFILE="cluster",
                FUSIONREC__SERVING__AUTH__MODE="api_key",
                FUSIONREC__SERVING__AUTH__KEY_FILE=str(tmp_path / "absent.key"),
            )
        )
    assert not (tmp_path / "absent.key").exists()


def test_mesh_mode_trusts_the_sidecars_principal_and_the_verified_subject(tmp_path):
    spiffe = "spiffe://cluster.local/ns/shop/sa/frontend"
    settings = _settings(
        tmp_path, FUSIONREC__SERVING__AUTH__MODE="mesh", FUSIONREC__SERVING__AUTH__SERVICE_PRINCIPALS=f"[{spiffe}]"
    )
    auth = Authenticator(settings)
    xfcc = f'By=spiffe://cluster.local/ns/fusionrec/sa/fusionrec-serving;Hash=abc;URI={spiffe}'
    assert auth.caller({"x-forwarded-client-cert": xfcc}) == Caller(spiffe, True, None, False)
    gateway = "spiffe://cluster.local/ns/istio-system/sa/cluster-local-gateway-service-account"
    via = f'By=spiffe://gw;URI={spiffe},By=spiffe://cluster.local/ns/fusionrec/sa/fusionrec-transformer;URI={gateway}'
    assert auth.caller({"x-forwarded-client-cert": via}).name == spiffe  # through Knative's gateway
    forged = f'URI={spiffe},By=spiffe://x;URI=spiffe://cluster.local/ns/shop/sa/attacker'
    with pytest.raises(Unauthorized):  # what a client put first is not believed: the last hop is the attacker
        auth.caller({"x-forwarded-client-cert": forged})
    quoted = f'Subject="CN=a,OU=b";URI=spiffe://cluster.local/ns/shop/sa/attacker,URI={spiffe}'
    assert auth.caller({"x-forwarded-client-cert": quoted}).name == spiffe
    assert auth.caller({"x-fusionrec-user": "u7"}) == Caller("user:u7", False, "u7", False)
    other = xfcc.replace("frontend", "someone-else")
    with pytest.raises(Unauthorized):  # an untrusted workload without an end user's token
        auth.caller({"x-forwarded-client-cert": other})
    with pytest.raises(Unauthorized):  # an API key means nothing in mesh mode
        auth.caller({"x-api-key": USER_KEY})


def _row(user=None, candidates=None, exclude_seen=True):
    return Row("recommend", 5, user_id=user, candidates=candidates, exclude_seen=exclude_seen)


def test_an_end_user_may_only_ask_for_themselves():
    shopper = Caller("shopper", False, "u1")
    authorise(shopper, [_row("u1"), _row(None)])
    with pytest.raises(Forbidden, match="its own user"):
        authorise(shopper, [_row("u1"), _row("u2")])


def test_exclude_seen_over_candidates_needs_the_history_grant_or_the_user_themselves():
    """The history oracle: candidates + exclude_seen tell, item by item, what a user has seen."""
    service, crm, shopper = Caller("svc", True), Caller("crm", True, history=True), Caller("me", False, "u1")
    with pytest.raises(Forbidden, match="history"):
        authorise(service, [_row("u2", ["a", "b"])])
    authorise(service, [_row("u2", ["a", "b"], exclude_seen=False), _row("u2")])  # scored as given; the catalogue
    authorise(crm, [_row("u2", ["a", "b"])])
    authorise(shopper, [_row("u1", ["a", "b"])])


def test_rate_limit_per_caller_refills_at_its_rate():
    now = [0.0]
    settings = load_settings(
        env={"FUSIONREC__SERVING__AUTH__USER_RATE_PER_S": "2", "FUSIONREC__SERVING__AUTH__USER_BURST": "3"}
    )
    limiter = RateLimiter(settings.serving.auth, clock=lambda: now[0])
    a, b = Caller("user:a", False, "a"), Caller("user:b", False, "b")
    for _ in range(3):
        limiter.take(a)
    with pytest.raises(TooManyRequests) as e:
        limiter.take(a)
    assert e.value.retry_after == 1 and e.value.http_status == 429
    limiter.take(b)  # another caller has its own bucket
    now[0] = 0.5  # one token back at 2 per second
    limiter.take(a)
    with pytest.raises(TooManyRequests):
        limiter.take(a)
