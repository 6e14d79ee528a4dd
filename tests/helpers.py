"""Assertions and runners shared by the tests."""

from click.testing import CliRunner, Result

from cds.cli import main


def outcome(response) -> dict:
    """The first issue of an OperationOutcome body, checked for the shape every error must have."""
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome", body
    issue = body["issue"][0]
    assert issue["severity"] == "error" and issue["diagnostics"]
    return issue


def run_cds(*args: object, env: dict[str, str] | None = None) -> Result:
    """`cds ARGS` run in-process as from a script: output is not a terminal, so it is plain text."""
    return CliRunner().invoke(main, [str(arg) for arg in args], env=env, catch_exceptions=False)
