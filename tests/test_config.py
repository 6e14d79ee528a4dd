import pytest

from cds.config import Settings, SettingsError


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
                                             ("CDS_MAX_BODY_BYTES", "-1"), ("CDS_MAX_JSON_DEPTH", "2")])
def test_bad_value_names_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


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


@pytest.mark.parametrize("url", ["nonsense", "mysql://db.example.org/cds", "sqlite://", "sqlite:///:memory:"])
def test_an_unusable_database_url_names_the_variable(url):
    with pytest.raises(SettingsError, match="CDS_DATABASE_URL"):
        Settings.from_env({"CDS_DATABASE_URL": url})
