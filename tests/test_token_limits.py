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


def signed(**claims) -> str:
    """Correctly signed by the test EHR, with claims exactly as given (no type conversion on the way out)."""
    return sign_raw(claims_for(**claims), {"kid": "ehr-ec"})


# Each case: the claims to sign, given the time now (tokens are minted as each test runs, never before).
ODD_TIMES = {
    "exp-1e30": lambda now: {"exp": 1e30},
    "exp-huge-int": lambda now: {"exp": 10**20},
    "exp-string": lambda now: {"exp": str(now + 300)},
    "exp-fraction": lambda now: {"exp": now + 300.5},
    "exp-boolean": lambda now: {"exp": True},
    "iat-string": lambda now: {"iat": str(now)},
    "iat-float": lambda now: {"iat": float(now)},
    "iat-negative": lambda now: {"iat": -1, "exp": now + 300},
    "nbf-string": lambda now: {"nbf": str(now)},
    "nbf-1e30": lambda now: {"nbf": 1e30},
    "a-year": lambda now: {"iat": now, "exp": now + 365 * DAY},
    "over-a-day": lambda now: {"iat": now - DAY, "exp": now + 60},  # 24 h and a minute, though it expires soon
}


@pytest.mark.parametrize("claims", list(ODD_TIMES.values()), ids=list(ODD_TIMES))
def test_odd_token_times_are_refused_with_401(client, order_sign, claims, caplog):
    token = signed(**claims(int(time.time())))
    assert_bare_401(client.post(SERVICE_PATH, json=order_sign, headers=bearer(token)))
    # Refused for its times (by this service's checks, or PyJWT's against the clock), not for anything else.
    assert any(reason in caplog.text for reason in ("is not a whole number of seconds", "lifetime",
                                                    "ExpiredSignatureError", "ImmatureSignatureError"))


@pytest.mark.parametrize("lifetime", [300, DAY], ids=["sandbox-5-minutes", "crd-request-generator-24-hours"])
def test_the_real_clients_token_lifetimes_are_accepted(client, order_sign, lifetime):
    now = int(time.time())
    token = mint(iat=now, exp=now + lifetime, nbf=now)
    assert client.post(SERVICE_PATH, json=order_sign, headers=bearer(token)).status_code == 200


def test_the_lifetime_cap_is_a_setting(make_app, order_sign):
    client = make_app(max_token_lifetime_seconds=600).test_client()
    now = int(time.time())
    assert client.post(SERVICE_PATH, json=order_sign, headers=bearer(mint(iat=now, exp=now + 600))).status_code == 200
    assert_bare_401(client.post(SERVICE_PATH, json=order_sign, headers=bearer(mint(iat=now, exp=now + 601))))


def test_a_replay_record_is_kept_until_the_token_expires_and_no_longer(app, order_sign):
    now = int(time.time())
    token = mint(iat=now, exp=now + DAY, jti="kept-for-a-day")
    assert app.test_client().post(SERVICE_PATH, json=order_sign, headers=bearer(token)).status_code == 200
    store = app.extensions["cds_store"]
    with store._replay.connect() as connection:
        expires = connection.execute(select(seen_jti.c.expires_at).where(seen_jti.c.jti == "kept-for-a-day")).scalar()
    skew = app.config["CDS_SETTINGS"].clock_skew_seconds
    assert expires == datetime.fromtimestamp(now + DAY + skew, UTC)
    assert store.purge(now=datetime.fromtimestamp(now + DAY + skew + 1, UTC)).jtis_deleted >= 1
