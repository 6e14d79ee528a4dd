import pytest

from cds.config import Settings, SettingsError, unknown_variables


def test_settings_from_environment():
    settings = Settings.from_env({
        "CDS_DEMO": "1", "CDS_PORT": "9000", "CDS_CORS_ORIGINS": "https://a.example, https://b.example",
        "CDS_MAX_BODY_BYTES": "4096", "UNRELATED": "x",
    })
    assert settings.demo is True
    assert settings.port == 9000
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.max_body_bytes == 4096


def test_defaults():
    settings = Settings.from_env({})
    assert settings.demo is False
    assert settings.host == "127.0.0.1"
    assert settings.max_body_bytes == 5 * 1024 * 1024
    assert settings.cors_origins == ()


def test_demo_defaults_to_any_cors_origin():
    assert Settings.from_env({"CDS_DEMO": "true"}).cors_origins == ("*",)


@pytest.mark.parametrize(("name", "value"), [("CDS_PORT", "eighty"), ("CDS_DEMO", "maybe"),
                                             ("CDS_MAX_BODY_BYTES", "-1"), ("CDS_MAX_JSON_DEPTH", "2"),
                                             ("CDS_LOG_FORMAT", "xml"), ("CDS_METRICS_ENABLED", "sometimes")])
def test_bad_value_names_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_member_data_settings():
    settings = Settings.from_env({
        "CDS_FHIR_SERVERS": "https://ehr.example.org/fhir, https://b.example.org/r4", "CDS_FETCH_BUDGET_SECONDS": "1.5",
        "CDS_STRICT_CRD": "yes", "CDS_SERVED_PAYERS": "urn:oid:2.16.840.1.113883.6.300|70670",
    })
    assert settings.fhir_servers == ("https://ehr.example.org/fhir", "https://b.example.org/r4")
    assert settings.fetch_budget_seconds == 1.5
    assert settings.strict_crd is True
    assert settings.served_payers == ("urn:oid:2.16.840.1.113883.6.300|70670",)
    assert Settings.from_env({}).fetch_budget_seconds == 2.0


@pytest.mark.parametrize(("env", "name"), [
    ({"CDS_FHIR_SERVERS": "http://ehr.example.org/fhir"}, "CDS_FHIR_SERVERS"),
    ({"CDS_FHIR_SERVERS": "ehr.example.org"}, "CDS_FHIR_SERVERS"),
    ({"CDS_FETCH_BUDGET_SECONDS": "0"}, "CDS_FETCH_BUDGET_SECONDS"),
    ({"CDS_FETCH_BUDGET_SECONDS": "soon"}, "CDS_FETCH_BUDGET_SECONDS"),
    ({"CDS_FETCH_BUDGET_SECONDS": "4"}, "CDS_FETCH_BUDGET_SECONDS"),
    ({"CDS_FETCH_MAX_PAGES": "0"}, "CDS_FETCH_MAX_PAGES"),
])
def test_bad_member_data_settings_name_the_variable(env, name):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(env)


def test_http_fhir_servers_are_allowed_in_demo_mode():
    settings = Settings.from_env({"CDS_DEMO": "1", "CDS_FHIR_SERVERS": "http://fhir.local:8080/fhir"})
    assert settings.fhir_servers == ("http://fhir.local:8080/fhir",)


@pytest.mark.parametrize("algorithms", ["none", "HS256", "ES384,HS512", "XS999", ""])
def test_jwt_algorithms_refuse_none_symmetric_and_unknown(algorithms):
    with pytest.raises(SettingsError, match="CDS_JWT_ALGORITHMS"):
        Settings.from_env({"CDS_JWT_ALGORITHMS": algorithms})


def test_authentication_settings():
    settings = Settings.from_env({"CDS_JWT_ALGORITHMS": "ES256, RS256", "CDS_AUTH_DISCOVERY": "yes",
                                  "CDS_CLOCK_SKEW_SECONDS": "30", "CDS_CLIENTS_FILE": "/etc/cds/clients.yaml",
                                  "CDS_PUBLIC_BASE_URL": "https://cds.example/, https://alias.example"})
    assert settings.jwt_algorithms == ("ES256", "RS256")
    assert settings.auth_discovery is True and settings.clock_skew_seconds == 30
    assert settings.clients_file == "/etc/cds/clients.yaml"
    assert settings.public_bases() == ("https://cds.example", "https://alias.example")
    assert Settings.from_env({}).jwt_algorithms == ("ES384", "RS384")


@pytest.mark.parametrize(("env", "off"), [
    ({"CDS_DEMO": "1", "CDS_AUTH_DISABLED": "1"}, True),
    ({"CDS_AUTH_DISABLED": "1"}, False),  # not demo mode
    ({"CDS_DEMO": "1", "CDS_AUTH_DISABLED": "1", "CDS_HOST": "0.0.0.0", "CDS_DEMO_ALLOW_REMOTE": "1"}, False),
    ({"CDS_DEMO": "1"}, False),
])
def test_authentication_is_off_only_in_demo_mode_on_loopback_when_asked(env, off):
    assert Settings.from_env(env).auth_off is off


def test_demo_mode_beyond_loopback_is_refused_unless_asked_for_and_then_says_what_it_exposes():
    with pytest.raises(SettingsError, match="CDS_DEMO_ALLOW_REMOTE=true") as refused:
        Settings.from_env({"CDS_DEMO": "1", "CDS_HOST": "0.0.0.0"})
    assert "private key is public" in str(refused.value)
    exposed = Settings.from_env({"CDS_DEMO": "1", "CDS_HOST": "0.0.0.0", "CDS_DEMO_ALLOW_REMOTE": "true"})
    relaxations = exposed.demo_relaxations()
    assert not [line for line in relaxations if "loopback only" in line]
    assert "listening on 0.0.0.0, beyond loopback" in relaxations[0]
    assert [line for line in relaxations if "sandbox key" in line and "anyone who reaches the port" in line]
    assert "bound to loopback only" in Settings.from_env({"CDS_DEMO": "1"}).demo_relaxations()
    assert Settings.from_env({"CDS_HOST": "0.0.0.0"}).demo_relaxations() == []  # not demo mode: nothing relaxed


def test_store_settings():
    settings = Settings.from_env({
        "CDS_DATABASE_URL": "postgresql+psycopg://cds:s3cret@db.example.org/cds", "CDS_AUDIT_REQUIRED": "true",
        "CDS_AUDIT_CAPTURE_PAYLOADS": "1", "CDS_AUDIT_RETENTION_DAYS": "7",
    })
    assert settings.store_url == "postgresql+psycopg://cds:s3cret@db.example.org/cds"
    assert (settings.audit_required, settings.audit_capture_payloads, settings.audit_retention_days) == (True, True, 7)
    assert "s3cret" not in repr(settings)


def test_the_default_store_is_a_sqlite_file_in_the_data_directory(tmp_path):
    assert Settings.from_env({"CDS_DATA_DIR": str(tmp_path)}).store_url == f"sqlite:///{tmp_path}/cds.sqlite3"
    assert Settings.from_env({}).audit_required is False
    assert Settings.from_env({}).spool_sync is False
    assert Settings.from_env({"CDS_SPOOL_SYNC": "true"}).spool_sync is True


@pytest.mark.parametrize("url", ["nonsense", "mysql://db.example.org/cds", "sqlite://", "sqlite:///:memory:"])
def test_an_unusable_database_url_names_the_variable(url):
    with pytest.raises(SettingsError, match="CDS_DATABASE_URL"):
        Settings.from_env({"CDS_DATABASE_URL": url})


@pytest.mark.parametrize(("name", "value", "says"), [
    ("CDS_WORKERS", "0", "at least one worker process is needed"),
    ("CDS_THREADS", "0", "at least one thread"),
    ("CDS_PORT", "0", "must be a port between 1 and 65535"),
    ("CDS_PORT", "70000", "must be a port between 1 and 65535"),
    ("CDS_HOST", "", "must not be empty"),
    ("CDS_LOG_LEVEL", "LOUD", "expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ("CDS_POLICY_DIRS", "/nonexistent", "entry '/nonexistent': no such directory"),
    ("CDS_CORS_ORIGINS", "notaurl", "entry 'notaurl': expected * or a browser origin"),
    ("CDS_CORS_ORIGINS", "https://ehr.example.org/path", "expected * or a browser origin"),
    ("CDS_PUBLIC_BASE_URL", "ftp://x", "entry 'ftp://x': expected an absolute http(s) URL"),
    ("CDS_PUBLIC_BASE_URL", "https://cds.example.org/?q=1", "expected an absolute http(s) URL without query"),
    ("CDS_DATA_DIR", "", "must not be empty"),
])
def test_values_the_service_cannot_use_stop_it_naming_the_variable(name, value, says):
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({name: value})
    assert str(raised.value).startswith(name) and says in str(raised.value)


def test_usable_urls_and_levels_are_taken():
    settings = Settings.from_env({"CDS_CORS_ORIGINS": "https://ehr.example.org, http://localhost:3000, *",
                                  "CDS_PUBLIC_BASE_URL": "https://cds.example.org/base/", "CDS_LOG_LEVEL": "debug"})
    assert settings.cors_origins == ("https://ehr.example.org", "http://localhost:3000", "*")
    assert settings.public_bases() == ("https://cds.example.org/base",)


def test_unknown_cds_variables_are_named_with_the_setting_they_may_mean():
    assert unknown_variables({"CDS_PORTT": "1", "CDS_PORT": "8080", "CDS_ZZZ": "x", "CDS_TEST_DATABASE_URL": "x",
                              "HOME": "/root"}) == [
        "CDS_PORTT is not a setting of this service (did you mean CDS_PORT?)",
        "CDS_ZZZ is not a setting of this service"]
