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
                                             ("CDS_MAX_BODY_BYTES", "-1"), ("CDS_MAX_JSON_DEPTH", "2"),
                                             ("CDS_LOG_FORMAT", "xml"), ("CDS_METRICS_ENABLED", "sometimes")])
def test_bad_value_names_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})
