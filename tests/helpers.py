"""Assertions shared by the API tests."""


def outcome(response) -> dict:
    """The first issue of an OperationOutcome body, checked for the shape every error must have."""
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome", body
    issue = body["issue"][0]
    assert issue["severity"] == "error" and issue["diagnostics"]
    return issue
