"""The loaded policies and mandates as the policies page lists them: codes, negatives, terms, mandate conditions.
What cards may say is the review table (`cds.policy.review`), the same as docs/review-table.md."""

from __future__ import annotations

from typing import Any

from cds.policy import CompiledPolicy


def policy_views(policies: tuple[CompiledPolicy, ...]) -> list[dict[str, Any]]:
    return [_view(policy) for policy in policies]


def _view(policy: CompiledPolicy) -> dict[str, Any]:
    spec = policy.spec
    mandates = []
    for mandate in policy.mandates:
        m = mandate.spec
        mandates.append({"id": m.id, "title": m.title, "citation": m.citation, "jurisdiction": m.jurisdiction,
                         "plans_on_or_after": m.plans_on_or_after, "lines_of_business": m.lines_of_business,
                         "funding": m.funding, "products": m.products, "children": m.children,
                         "child_age_limit": mandate.child_age_limit, "verify_under": m.children_verify_under,
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
    }
