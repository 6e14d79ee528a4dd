"""The review table in docs/ is current, and every sentence a card says is one the table lists with its source."""

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from cds.config import EXAMPLE_PLAN_DIRECTORY
from cds.policy import load_policies
from cds.policy import wording as w
from cds.policy.review import review_sections, review_table
from hooks import HOOKS
from tests.helpers import EXAMPLES, load

ROOT = Path(__file__).parent.parent
TABLE = ROOT / "docs" / "review-table.md"
SERVICE = {hook.name: hook.service_id for hook in HOOKS}


def test_the_review_table_is_current():
    assert TABLE.read_text(encoding="utf-8") == review_table(load_policies()), \
        "docs/review-table.md is not current: run .venv/bin/python scripts/review_table.py"


def test_the_script_writes_the_table(tmp_path):
    before = TABLE.read_text(encoding="utf-8")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "review_table.py")], capture_output=True, text=True,
                          timeout=60, check=True)
    assert "review-table.md" in done.stdout and TABLE.read_text(encoding="utf-8") == before


def test_without_a_policy_each_name_the_files_would_fill_is_a_placeholder():
    [sentences] = review_sections([])
    says = {key: text for key, _, text, _ in sentences.rows}
    assert says["policy-heading"].startswith('**Medical policy <policy> "<title>"**, <publisher>, effective ')


def test_what_a_policy_or_mandate_leaves_out_is_said_and_a_pipe_stays_in_its_cell():
    [policy] = load_policies()
    mandate = policy.mandates[0]
    mandate = replace(mandate, source_file="", diagnoses=None,
                      spec=mandate.spec.model_copy(update={"children": False}))
    policy = replace(policy, source_file="", mandates=(mandate,), spec=policy.spec.model_copy(
        update={"title": "Heat | light", "lines_of_business": ["commercial", "medicaid"]}))
    policy_texts, mandate_texts, sentences = review_sections([policy])
    assert policy_texts.heading == f'Medical policy {policy.id} "Heat | light" (policy file)'
    assert mandate_texts.heading == f"Mandate {mandate.id}: {mandate.spec.title} (mandate file)"
    [age] = [row for row in mandate_texts.rows if row[0] == "Age"]
    assert age[2:] == ("(none)", f"plan rule: the mandate file ({mandate.id})")
    assert not [row for row in mandate_texts.rows if row[0].startswith("Qualifying diagnoses")]
    says = {key: (text, source) for key, _, text, source in sentences.rows}
    assert "governs commercial, medicaid plans" in says["elsewhere-reason"][0]
    assert "plan rule: the policy file (<policy_file>)" in {source for _, source in says.values()}
    assert f'| **Medical policy {policy.id} "Heat \\| light"**, ' in review_table([policy])  # a cell, not two


def test_every_wording_has_a_source_and_is_in_the_table():
    table = TABLE.read_text(encoding="utf-8")
    keys = [item.key for item in w.WORDINGS]
    assert len(keys) == len(set(keys))
    for item in w.WORDINGS:
        assert item.source.strip() and f"| {item.key} |" in table, item.key
    for source in ("plan rule: the setting CDS_MANDATE_CHILD_AGE_LIMIT (under 19)",
                   "plan rule: the mandate file (mandates/IL-PA-103-0458.yaml)",
                   "Illinois Public Act 103-0458 (215 ILCS 5/356z.61 as cited by HCSC), as HCSC medical policy "
                   "DME101.045, Legislative Mandates quotes it"):
        assert source in table


def _pattern(template: str) -> str:
    parts = re.split(r"\{[a-z_]+\}", template)
    return ".+?".join(re.escape(part) for part in parts)


# Sentences a card line is made of: the service's wordings (bar those that are nothing but placeholders) and the
# texts of the policy and mandate files.
_WORDS = [item.template for item in w.WORDINGS if item not in (w.QUOTE, w.CARD_SUMMARY, w.MEMBER_NOTE)] + \
    [f"{item.template}: {item.resolve}" for item in w.WORDINGS if item.resolve]
_LINE = re.compile(r"(?:{0})(?:(?:[ ;:]+|, )(?:{0}))*\.?".format("|".join(_pattern(t) for t in _WORDS)))


def _file_texts() -> list[str]:
    policy = load_policies()[0]
    spec, texts = policy.spec, []
    texts += [spec.coverage_statement, spec.basis, spec.plan_governs, spec.text.device_definition]
    for mandate in policy.mandates:
        texts += [mandate.spec.quote]
    return [" ".join(text.split()) for text in texts]


EXPECTED = yaml.safe_load((EXAMPLES / "expected.yaml").read_text())


@pytest.mark.parametrize("name", sorted(name for name, want in EXPECTED.items() if want["cards"]))
def test_every_line_of_every_example_card_is_a_listed_sentence_or_a_quoted_file_text(make_app, name):
    client = make_app(plan_directory=EXAMPLE_PLAN_DIRECTORY).test_client()
    body = load(name)
    cards = client.post(f"/cds-services/{SERVICE[body['hook']]}", json=body).get_json()["cards"]
    quoted = _file_texts()
    headings = (w.NOT_KNOWN(), w.NOT_EVALUATED())
    for card in cards:
        listing = False
        for line in filter(None, card["detail"].split("\n")):
            if line.startswith("> "):
                assert line[2:] in quoted, line
                continue
            listing = line in headings or (listing and line.startswith("- "))
            line = line.removeprefix("- ")
            if listing and line[:1].isupper() and not line.startswith("Medicare coverage"):
                continue  # a note on member data (wording.MEMBER_NOTE): sentences of cds/member, capitalised
            # A diagnosis' display and an order's description are the EHR's words, kept out of the check.
            assert _LINE.fullmatch(line), line
