"""The one gunicorn configuration shared by `cds serve` and the image (served for real in test_cli/test_image)."""

import pytest

from cds.config import Settings
from cds.web.serving import (
    WORKER_TIMEOUT_SECONDS,
    NoAccessLinesLogger,
    gunicorn_options,
    on_starting,
    prepare_metrics_dir,
)


def test_workers_time_out_below_the_crd_budget_and_stop_gracefully():
    options = gunicorn_options(Settings())
    assert options["timeout"] == WORKER_TIMEOUT_SECONDS < 5
    assert options["graceful_timeout"] > 0
    assert options["limit_request_field_size"] >= 8192  # room for a client JWT in Authorization


def test_gunicorn_writes_no_access_lines_of_its_own():
    """cds.access logs each request; gunicorn's line would carry the raw URI, and building it costs every call."""
    options = gunicorn_options(Settings())
    assert options["accesslog"] is None
    assert options["logger_class"] == f"{NoAccessLinesLogger.__module__}.{NoAccessLinesLogger.__qualname__}"


def test_metrics_off_means_no_metrics_directory_hooks():
    options = gunicorn_options(Settings(metrics_enabled=False))
    assert options["on_starting"] is on_starting  # unknown CDS_* variables only
    assert "child_exit" not in options and "on_exit" not in options


def test_refuses_to_start_when_metrics_would_not_add_up_across_workers(monkeypatch):
    # This test process imported prometheus_client without PROMETHEUS_MULTIPROC_DIR (via cds.web.app), as a
    # master process would if a module imported it too early; workers forked from it would count alone.
    import cds.web.app  # noqa: F401

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with pytest.raises(RuntimeError, match="PROMETHEUS_MULTIPROC_DIR"):
        prepare_metrics_dir(server=None)
