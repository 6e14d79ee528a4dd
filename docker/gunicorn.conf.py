"""Gunicorn settings for the container image: the same ones `cds serve` uses (cds/web/serving.py).

A setting the service cannot use, or a clients file its user cannot read, stops the container at once with one
line saying so, rather than every worker failing to boot in turn.
"""

import os

from cds.config import Settings, SettingsError
from cds.web.serving import gunicorn_options

try:
    settings = Settings.from_env()
except SettingsError as exc:
    raise SystemExit(f"cds: {exc}") from None
if settings.clients_file and not os.access(settings.clients_file, os.R_OK):
    raise SystemExit(f"cds: CDS_CLIENTS_FILE={settings.clients_file} is missing or not readable by uid {os.getuid()}, "
                     f"the service's user: e.g. chgrp {os.getgid()} FILE && chmod 0640 FILE (docs/operating.md)")
globals().update(gunicorn_options(settings))
