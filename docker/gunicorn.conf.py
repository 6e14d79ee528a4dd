"""Gunicorn settings for the container image: the same ones `cds serve` uses (cds/web/serving.py).

A setting the service cannot use, or a file it names that its user cannot read or the service cannot use (the
clients file, a policy file, the plan directory), stops the container at once with one line saying so, naming
the variable, rather than every worker failing to boot in turn: the files are loaded here, in the master, as
`cds serve` loads them before it forks (cds/tools/server.py).
"""

import os

from cds.config import Settings, SettingsError
from cds.pipeline import check_configured_files
from cds.web.serving import gunicorn_options

try:
    settings = Settings.from_env()
except SettingsError as exc:
    raise SystemExit(f"cds: {exc}") from None
if settings.clients_file and not os.access(settings.clients_file, os.R_OK):
    raise SystemExit(f"cds: CDS_CLIENTS_FILE={settings.clients_file} is missing or not readable by uid {os.getuid()}, "
                     f"the service's user: e.g. chgrp {os.getgid()} FILE && chmod 0640 FILE (docs/operating.md)")
try:
    check_configured_files(settings)
except SettingsError as exc:
    raise SystemExit(f"cds: {exc}") from None
globals().update(gunicorn_options(settings))
