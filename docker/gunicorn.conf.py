"""Gunicorn settings for the container image: the same ones `cds serve` uses (cds/gunicorn_config.py)."""

from cds.config import Settings
from cds.web.serving import gunicorn_options

globals().update(gunicorn_options(Settings.from_env()))
