"""The Flask app factory. Gunicorn: `gunicorn 'cds.web.app:create_app()'`."""

from __future__ import annotations

import gc
import logging

from flask import Flask

from cds.auth import register_auth
from cds.config import Settings
from cds.console.views import register_console
from cds.errors import register_error_handlers
from cds.fhir import load_order_models
from cds.pipeline import CoverageService
from cds.record import Store
from cds.web.cors import register_cors
from cds.web.ops import add_readiness_check, register_ops
from cds.web.readiness import StoreProbe, policies_loaded
from cds.web.routes import bp

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(CDS_SETTINGS=settings, MAX_CONTENT_LENGTH=settings.max_body_bytes)
    app.extensions["cds"] = CoverageService(settings)
    app.extensions["cds_store"] = Store.from_settings(settings).start()
    register_ops(app, settings)
    add_readiness_check(app, policies_loaded(app.extensions["cds"]))
    add_readiness_check(app, StoreProbe(app.extensions["cds_store"]))
    register_cors(app, settings.cors_origins)
    register_auth(app, settings)
    register_error_handlers(app)
    app.register_blueprint(bp)
    register_console(app, settings)
    for relaxation in settings.demo_relaxations():
        log.warning("demo mode: %s", relaxation)
    load_order_models()
    # Start-up objects (modules, FHIR models, schemas) leave the collector's view: full collections would
    # otherwise walk them all during requests, stalling about one request in a hundred by 15 ms or more.
    gc.freeze()
    return app
