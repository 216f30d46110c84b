"""API keys without I/O: the key format, what a presented key may do, where it is read from."""

from __future__ import annotations

import pytest

from service.auth.keys import ActiveKey, Denied, KeySet, Scope, digest, new_key, parse_scopes, presented_token


def keyset(*scopes: Scope, enforced: bool = True) -> tuple[KeySet, str]:
    key = new_key()
    active = ActiveKey(key.key_id, "web-app", key.secret_hash, frozenset(scopes))
    return KeySet({key.key_id: active}, enforced=enforced), key.token


def denied(keys: KeySet, token: str | None, scope: Scope | None) -> Denied:
    with pytest.raises(Denied) as caught:
        keys.authorize(token, scope)
    return caught.value


def test_a_new_key_stores_only_the_digest_of_its_secret() -> None:
    key = new_key()
    prefix, key_id, secret = key.token.split("_", 2)
    assert (prefix, key_id) == ("ll", key.key_id)
    assert key.secret_hash == digest(secret) != secret
    assert secret not in key.secret_hash
    assert new_key().token != key.token


def test_a_key_grants_exactly_its_scopes() -> None:
    keys, token = keyset(Scope.INGEST, Scope.READ)
    assert keys.authorize(token, Scope.INGEST) is not None
    assert keys.authorize(token, Scope.READ) is not None
    assert keys.authorize(token, None) is not None  # any valid key
    forbidden = denied(keys, token, Scope.ADMIN)
    assert forbidden.status == 403
    assert "'admin'" in forbidden.reason


@pytest.mark.parametrize("token", [None, "", "ll_0123456789ab_" + "x" * 43, "not-a-key", "ll_zz_zz"])
def test_no_key_or_an_unknown_one_is_401(token: str | None) -> None:
    keys, _ = keyset(Scope.ADMIN)
    assert denied(keys, token, Scope.ADMIN).status == 401


def test_the_right_id_with_a_wrong_secret_is_401() -> None:
    keys, token = keyset(Scope.ADMIN)
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert denied(keys, forged, Scope.ADMIN).status == 401


def test_a_revoked_key_is_not_in_the_set_and_the_set_stays_enforced() -> None:
    _, token = keyset(Scope.INGEST)
    assert denied(KeySet({}, enforced=True), token, Scope.INGEST).status == 401


def test_an_unenforced_set_lets_anyone_in() -> None:
    keys, _ = keyset(Scope.ADMIN, enforced=False)
    assert keys.authorize(None, Scope.ADMIN) is None


@pytest.mark.parametrize(
    ("headers", "token"),
    [
        ({"authorization": "Bearer abc"}, "abc"),
        ({"authorization": "bearer  abc "}, "abc"),
        ({"x-api-key": "abc"}, "abc"),
        ({"authorization": "Basic abc"}, None),  # not a bearer token
        ({"authorization": "Basic abc", "x-api-key": "key"}, "key"),  # Basic added by a proxy
        ({}, None),
    ],
)
def test_presented_token(headers: dict[str, str], token: str | None) -> None:
    assert presented_token(headers) == token


def test_unknown_scope_names_are_refused() -> None:
    assert parse_scopes(["ingest", " read "]) == {Scope.INGEST, Scope.READ}
    with pytest.raises(ValueError, match="everything"):
        parse_scopes(["everything"])
