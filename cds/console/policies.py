"""The loaded policies and mandates as the policies page lists them, with the review table: every text a card
or a coverage-information reason may carry, where it is used and where it comes from."""

from __future__ import annotations

from typing import Any

from cds.policy import CompiledPolicy


def policy_views(policies: tuple[CompiledPolicy, ...]) -> list[dict[str, Any]]:
    return [_view(policy) for policy in policies]


def _view(policy: CompiledPolicy) -> dict[str, Any]:
    spec = policy.spec
    said = [
        ("Coverage statement", "card detail, quoted", spec.coverage_statement, f"medical policy {spec.id}, verbatim"),
        ("Basis", "card detail", spec.basis, f"the basis medical policy {spec.id} states"),
        ("The benefit plan governs", "card detail", spec.plan_governs, f"medical policy {spec.id}'s disclaimer"),
        ("Verdict", "card summary", spec.decision.verdict, f"medical policy {spec.id}"),
        ("Reason", "coverage-information reason", spec.decision.reason, f"medical policy {spec.id}"),
    ]
    if spec.national_coverage:
        ncd = spec.national_coverage
        said += [("Medicare verdict", "card summary (Medicare members, named indication)", ncd.verdict, ncd.name),
                 ("Medicare reason", "coverage-information reason (Medicare members)", ncd.reason, ncd.name)]
    mandates = []
    for mandate in policy.mandates:
        m = mandate.spec
        said += [(f"{m.id}: what the law says", "card detail (members it may reach)", m.quote,
                  f"{m.citation}, as {m.quoted_from} quotes it"),
                 *((f"{m.id}: plan requirement", "card detail and reason (every condition met)", r.text,
                    f"plan rule: {r.source}") for r in m.plan_requirements),
                 (f"{m.id}: every condition met", "card summary", m.covered_verdict, m.citation),
                 (f"{m.id}: a condition not known", "card summary", m.conditional_verdict, m.citation)]
        mandates.append({"id": m.id, "title": m.title, "citation": m.citation, "jurisdiction": m.jurisdiction,
                         "plans_on_or_after": m.plans_on_or_after, "lines_of_business": m.lines_of_business,
                         "funding": m.funding, "products": m.products, "children": m.children,
                         "child_age_limit": mandate.child_age_limit,
                         "diagnoses": mandate.diagnoses.groups if mandate.diagnoses else ()})  # as in force
    return {
        "id": spec.id, "title": spec.title, "publisher": spec.publisher, "version": spec.version,
        "effective": spec.effective, "link": policy.link, "applies_to": spec.applies_to, "codes": spec.codes,
        "excluded": spec.excluded_codes, "terms": spec.text.strong if spec.text else [],
        "weak_terms": spec.text.weak if spec.text else [],
        "must_not_match": spec.text.must_not_match if spec.text else [],
        "indications": [(g.name, g.icd10cm) for g in spec.national_coverage.indications]
        if spec.national_coverage else [],
        "ncd": spec.national_coverage.name if spec.national_coverage else "",
        "references": spec.references, "mandates": mandates,
        "said": [{"name": n, "where": w, "text": t, "source": s} for n, w, t, s in said],
    }
