"""The Flask app factory. Gunicorn: `gunicorn 'cds.web.app:create_app()'`."""

from __future__ import annotations

import gc
import logging

from flask import Flask

from cds.auth import Authenticator
from cds.config import Settings
from cds.console.views import register_console
from cds.errors import register_error_handlers
from cds.fhir import load_order_models
from cds.logs import say_at_start_up
from cds.pipeline import load_service
from cds.record import Recorder, Store
from cds.record.departures import DepartureLog
from cds.web import openapi
from cds.web.cors import register_cors
from cds.web.ops import add_readiness_check, register_ops
from cds.web.readiness import StoreProbe, policies_loaded
from cds.web.routes import bp

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(CDS_SETTINGS=settings, MAX_CONTENT_LENGTH=settings.max_body_bytes)
    store = Store.from_settings(settings)
    recorder = Recorder(store, DepartureLog(settings.r4_check_interval_ms), settings.audit_capture_payloads)
    service = load_service(settings, Authenticator(settings, store), recorder)
    store.start()
    app.extensions.update(cds=service, cds_store=store, cds_auth=service.authenticator)
    register_ops(app, settings)
    add_readiness_check(app, policies_loaded(service))
    # Only with audit required can no call be answered without the database; otherwise calls do what the
    # store's failure policy says while it is unreachable (docs/operating.md, "Durability").
    add_readiness_check(app, StoreProbe(store), calls_need_it=settings.audit_required)
    register_cors(app, settings.cors_origins)
    register_error_handlers(app)
    app.register_blueprint(bp)
    app.register_blueprint(openapi.bp)
    register_console(app, settings)
    for relaxation in settings.demo_relaxations():
        say_at_start_up(log, logging.WARNING, "demo mode: %s", relaxation)
    load_order_models()
    # Start-up objects (modules, FHIR models, schemas) leave the collector's view: full collections would
    # otherwise walk them all during requests, stalling about one request in a hundred by 15 ms or more.
    gc.freeze()
    return app
