"""The key the console signs its CDS Hooks calls with.

In demo mode the console signs with a key of its own: an ES384 key pair created on first start in
CDS_DATA_DIR/console-key.json (readable by its owner only) and shared by every worker process, which demo mode,
and only demo mode, trusts under the issuer CDS_CONSOLE_ISS. Outside demo mode the console signs with
CDS_CONSOLE_KEY_FILE, a key the operator registers in CDS_CLIENTS_FILE like any EHR's, or not at all.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from cds.config import Settings, SettingsError
from cds.tools.signing import KeyFileError, Signer, new_private_jwk, public_jwks, read_private_jwk

DEMO_KEY_FILE = "console-key.json"


def key_path(settings: Settings) -> Path | None:
    """The console's private key file: the configured one, else (demo mode) its own, created if missing."""
    if settings.console_key_file:
        return Path(settings.console_key_file)
    if not settings.demo:
        return None
    path = Path(settings.data_dir) / DEMO_KEY_FILE
    if not path.exists():
        _create(path)
    return path


def console_signer(settings: Settings) -> Signer | None:
    """What the console signs with; SettingsError, naming the variable, when the key file cannot sign."""
    path = key_path(settings)
    try:
        return Signer.from_file(path, settings.console_iss) if path else None
    except KeyFileError as exc:
        raise SettingsError(f"CDS_CONSOLE_KEY_FILE: {exc}") from None


def demo_trusted_jwks(settings: Settings) -> dict[str, Any] | None:
    """The public key set demo mode trusts for the console's issuer; None outside demo mode."""
    path = key_path(settings) if settings.demo else None
    if path is None:
        return None
    console_signer(settings)  # a key that cannot sign stops start-up here, naming the variable
    return public_jwks(read_private_jwk(path))


def _create(path: Path) -> None:
    """Write a new key beside `path` and link it into place: of workers starting together, one key wins and
    every one of them reads that one; a key is never overwritten."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".console-key-")
    try:
        with os.fdopen(fd, "w") as file:  # mkstemp creates it readable by its owner only
            json.dump(new_private_jwk(), file, indent=2)
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)

