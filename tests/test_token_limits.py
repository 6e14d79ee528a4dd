"""Token times: whole seconds in a sane range, and a lifetime no longer than CDS_MAX_TOKEN_LIFETIME_SECONDS;
every token outside them is a 401 (never a 500), and a replay record lasts only as long as its token could."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from cds.record.schema import seen_jti
from tests.test_auth import assert_bare_401
from tests.tokens import SERVICE_PATH, bearer, claims_for, mint, sign_raw

DAY = 24 * 3600
NOW = int(time.time())


def signed(**claims) -> str:
    """Correctly signed by the test EHR, with claims exactly as given (no type conversion on the way out)."""
    return sign_raw(claims_for(**claims), {"kid": "ehr-ec"})


@pytest.mark.parametrize("token", [
    signed(exp=1e30),
    signed(exp=10**20),
    signed(exp=str(NOW + 300)),
    signed(exp=NOW + 300.5),
    signed(exp=True),
    signed(iat=str(NOW)),
    signed(iat=float(NOW)),
    signed(iat=-1, exp=NOW + 300),
    signed(nbf=str(NOW)),
    signed(nbf=1e30),
    signed(iat=NOW, exp=NOW + 365 * DAY),
    signed(iat=NOW - DAY, exp=NOW + 60),  # 24 h and a minute in all, though it expires soon
], ids=["exp-1e30", "exp-huge-int", "exp-string", "exp-fraction", "exp-boolean", "iat-string", "iat-float",
        "iat-negative", "nbf-string", "nbf-1e30", "a-year", "over-a-day"])
def test_odd_token_times_are_refused_with_401(client, order_sign, token):
    assert_bare_401(client.post(SERVICE_PATH, json=order_sign, headers=bearer(token)))


@pytest.mark.parametrize("lifetime", [300, DAY], ids=["sandbox-5-minutes", "crd-request-generator-24-hours"])
def test_the_real_clients_token_lifetimes_are_accepted(client, order_sign, lifetime):
    token = mint(iat=NOW, exp=NOW + lifetime, nbf=NOW)
    assert client.post(SERVICE_PATH, json=order_sign, headers=bearer(token)).status_code == 200


def test_the_lifetime_cap_is_a_setting(make_app, order_sign):
    client = make_app(max_token_lifetime_seconds=600).test_client()
    assert client.post(SERVICE_PATH, json=order_sign, headers=bearer(mint(iat=NOW, exp=NOW + 600))).status_code == 200
    assert_bare_401(client.post(SERVICE_PATH, json=order_sign, headers=bearer(mint(iat=NOW, exp=NOW + 601))))


def test_a_replay_record_is_kept_until_the_token_expires_and_no_longer(app, order_sign):
    token = mint(iat=NOW, exp=NOW + DAY, jti="kept-for-a-day")
    assert app.test_client().post(SERVICE_PATH, json=order_sign, headers=bearer(token)).status_code == 200
    store = app.extensions["cds_store"]
    with store._replay.connect() as connection:
        expires = connection.execute(select(seen_jti.c.expires_at).where(seen_jti.c.jti == "kept-for-a-day")).scalar()
    skew = app.config["CDS_SETTINGS"].clock_skew_seconds
    assert expires == datetime.fromtimestamp(NOW + DAY + skew, UTC)
    assert store.purge(now=datetime.fromtimestamp(NOW + DAY + skew + 1, UTC)).jtis_deleted >= 1
