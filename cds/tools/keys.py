"""`cds keys`: the key pair that signs calls to CDS services, as a JWK or PEM, and its public half to register."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

FORMATS = ("jwk", "pem")
KEY_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
OUT_FILE = click.Path(dir_okay=False, path_type=Path)


@click.group()
def keys() -> None:
    """Key pairs that sign calls to CDS services (CDS Hooks JWT): make, convert, show the public half."""


def _read(key_file: Path, kid: str | None = None) -> dict[str, Any]:
    from cds.tools.signing import KeyFileError, read_private_jwk

    try:
        return read_private_jwk(key_file, kid)
    except KeyFileError as exc:
        raise click.BadParameter(str(exc), param_hint="KEY_FILE") from None


def _write(out: Path, jwk: dict[str, Any], form: str) -> None:
    """The private key to a new file readable by its owner only, never over an existing one."""
    from cds.tools.signing import jwk_text, private_pem, write_private_key

    try:
        write_private_key(out, private_pem(jwk) if form == "pem" else jwk_text(jwk))
    except FileExistsError:
        raise click.BadParameter(f"{out} exists; it is not overwritten", param_hint="--out") from None
    except OSError as exc:
        raise click.BadParameter(f"cannot write {out}: {exc.strerror}", param_hint="--out") from None


def _print_public(jwk: dict[str, Any], form: str) -> None:
    from cds.tools.cli import print_json
    from cds.tools.signing import public_jwks, public_pem

    if form == "pem":
        click.echo(public_pem(jwk), nl=False)
    else:
        print_json(public_jwks(jwk))


@keys.command("new")
@click.option("--out", default="cds-client-key.json", show_default=True, type=OUT_FILE,
              help="Where to write the private key (never overwritten).")
@click.option("--format", "form", type=click.Choice(FORMATS), default="jwk", show_default=True,
              help="Private key file format; the public half is printed in the same format.")
def keys_new(out: Path, form: str) -> None:
    """Create an ES384 key pair; print the public half (a JWK set, or PEM) to register with each service."""
    from cds.tools.signing import new_private_jwk

    jwk = new_private_jwk()
    _write(out, jwk, form)
    _print_public(jwk, form)
    click.echo(f"Private key written to {out} (kid {jwk['kid']}); keep it secret. Register the public key above "
               f"with each service, then sign calls with --key {out} --iss YOUR-ISSUER-URL.", err=True)


@keys.command("public")
@click.argument("key_file", type=KEY_FILE)
@click.option("--format", "form", type=click.Choice(FORMATS), default="jwk", show_default=True,
              help="jwk: the JWK set a service registers; pem: the public key as PEM.")
@click.option("--kid", help="Key id to name the key by (default: the JWK's kid, or a PEM key's thumbprint).")
def keys_public(key_file: Path, form: str, kid: str | None) -> None:
    """Print the public half of a private key file (JWK or PEM)."""
    _print_public(_read(key_file, kid), form)


@keys.command("import")
@click.argument("key_file", type=KEY_FILE)
@click.option("--out", required=True, type=OUT_FILE, help="Where to write the private JWK (never overwritten).")
@click.option("--kid", help="Key id (default: the RFC 7638 thumbprint of the public key).")
def keys_import(key_file: Path, out: Path, kid: str | None) -> None:
    """A PEM private key (PKCS#8, SEC1 or PKCS#1, unencrypted) as a private JWK; prints its public JWK set."""
    jwk = _read(key_file, kid)
    _write(out, jwk, "jwk")
    _print_public(jwk, "jwk")
    click.echo(f"Private JWK written to {out} (kid {jwk['kid']}).", err=True)


@keys.command("export")
@click.argument("key_file", type=KEY_FILE)
@click.option("--out", required=True, type=OUT_FILE, help="Where to write the private key (never overwritten).")
@click.option("--format", "form", type=click.Choice(FORMATS), default="pem", show_default=True)
def keys_export(key_file: Path, out: Path, form: str) -> None:
    """A private key file (JWK or PEM) in the other format: PKCS#8 PEM, or a JWK."""
    jwk = _read(key_file)
    _write(out, jwk, form)
    click.echo(f"Private key written to {out} as {form.upper()} (kid {jwk['kid']}).", err=True)
