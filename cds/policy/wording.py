"""Every sentence a decision or its card can say, each with the source it comes from.

A wording is a template: its {names} are filled from the policy and mandate files, the settings, or the member and
the order. `WORDINGS` lists them all; `scripts/review_table.py` writes them, with the texts of the policy and mandate
files, to docs/review-table.md for a payer's analyst to review (a test checks that the file is current).

Sources are named as a reviewer checks them: a section of the medical policy (its words quoted), the national
coverage determination or the Act as the policy quotes them, a regulation, "plan rule: <file or setting>" for what
the payer decided, "member data" for facts about the member, and "this service" for what the service says of its
own work (how an order matched, what it could not evaluate).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

POLICY_FILE = "plan rule: the policy file ({policy_file})"
MANDATE_FILE = "plan rule: the mandate file ({mandate_file})"
AGE_SETTING = "plan rule: the setting CDS_MANDATE_CHILD_AGE_LIMIT (under {limit})"
MEMBER = "member data: the Coverage, the plan directory, the Patient and Conditions, the order"
SERVICE = "this service"

WORDINGS: list[Wording] = []
LINES = {"commercial": "commercial", "medicare": "Medicare", "medicaid": "Medicaid", "other": "non-commercial",
         "unknown": "unknown"}  # lines of business in words
NOT_SAID = "neither the Coverage nor the plan directory says"  # why a plan fact is unknown, when nothing else says


def listed(words: Sequence[str], last: str = "and") -> str:
    """Words as a clinician reads a list: "a, b and c" (or, with `last` "or", "a, b or c")."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + f" {last} {words[-1]}"


@dataclass(frozen=True)
class Wording:
    key: str
    where: str  # the part of the answer that says it
    template: str
    source: str  # where it comes from; a template too
    resolve: str = ""  # for something not known: how to resolve it (a template)

    def __call__(self, **values: Any) -> str:
        return self.template.format(**values)

    def how(self, **values: Any) -> str:
        return self.resolve.format(**values)


# Runs only while the module is imported, which mutmut's forked runs do not repeat, so it is not mutated; the review
# table's tests fail on each of its mutants run on their own.
def _says(key: str, where: str, template: str, source: str, resolve: str = "") -> Wording:  # pragma: no mutate block
    wording = Wording(key, where, template, source, resolve)
    WORDINGS.append(wording)
    return wording


DETAIL = "card detail"
REASON = "coverage-information reason"
SUMMARY = "card summary"
UNKNOWN = "card detail, Not known (and the reason, in short)"
CONDITION = "card detail, a mandate's conditions"

# ------------------------------------------------------------------------------------------------- the card

POLICY_HEADING = _says("policy-heading", DETAIL, '**Medical policy {policy} "{title}"**, {publisher}, effective '
                       "{effective}:", POLICY_FILE)
QUOTE = _says("quote", DETAIL, "> {text}", "the source named in the line before")
BASIS = _says("basis", DETAIL, "**Basis** (the policy's {section}):", "medical policy {policy}, {section}")
MATCHED = _says("matched", DETAIL, "**How this order matched:** {how}", SERVICE)
MATCHED_CODE = _says("matched-code", DETAIL, "billing code {system} {code} ({descriptor}){modifiers}{no_system} in "
                     "{element}.", "the order; the short descriptor: " + POLICY_FILE)
MATCHED_STRONG = _says("matched-strong", DETAIL, 'by its description, not by a billing code: "{text}" ({element}) '
                       'names "{term}", a description the policy file lists as naming this policy\'s devices.',
                       "the order; the description: " + POLICY_FILE + ", text.strong")
MATCHED_WEAK = _says("matched-weak", DETAIL, 'by its description, not by a billing code: "{text}" ({element}) names '
                     '"{term}", a description that may name this policy\'s devices or another item.',
                     "the order; the description: " + POLICY_FILE + ", text.weak")
DEFINITION = _says("definition", DETAIL, "The policy's {section} defines its devices:", "medical policy {policy}, "
                   "{section}")
NOT_KNOWN = _says("not-known", DETAIL, "**Not known, and how to resolve it:**", SERVICE)
NOT_EVALUATED = _says("not-evaluated", DETAIL, "**Not evaluated:**", SERVICE)
MEMBER_NOTE = _says("member-note", "card detail, Not evaluated or Not known", "{note}", "this service: member data "
                    "that could not be had or used, as cds/member reports it (a capitalised sentence)")
NO_COVERAGE = _says("no-coverage", DETAIL, "{why}, so this states the medical policy without checking the "
                    "member's benefits.", SERVICE + "; why no coverage could be used: " + MEMBER)
PLAN_GOVERNS = _says("plan-governs", DETAIL, "**The benefit plan governs** (the policy's {section}):",
                     "medical policy {policy}, {section}")
CARD_SUMMARY = _says("summary", SUMMARY, "{item} {verdict}, policy {policy}", "the verdict's source (below)")

# --------------------------------------------------------------------------------------- lines of business

ELSEWHERE_VERDICT = _says("elsewhere-verdict", SUMMARY, "not decided here: {line} plan", POLICY_FILE + ", "
                          "lines_of_business")
ELSEWHERE_REASON = _says("elsewhere-reason", REASON, 'Medical policy {policy} "{title}" governs {lines} plans; the '
                         "plan is {a_line} plan, for which {rules} govern. Not known: coverage under {rules}.",
                         POLICY_FILE + ", lines_of_business and governed_elsewhere; the line: " + MEMBER)
ELSEWHERE = _says("elsewhere", DETAIL, "**Line of business:** the plan is {a_line} plan. Medical policy {policy} "
                  "governs {lines} plans; for this plan {rules} govern, and this service does not hold them.",
                  POLICY_FILE + ", lines_of_business and governed_elsewhere; the line: " + MEMBER)
ELSEWHERE_UNKNOWN = _says("elsewhere-unknown", UNKNOWN, "coverage under {rules} (the plan is {a_line} plan)",
                          POLICY_FILE + ", governed_elsewhere", "verify coverage under {rules}")
LINE_NOT_KNOWN = _says("line-not-known", UNKNOWN + "; " + CONDITION, "the plan's line of business (commercial, "
                        "Medicare or Medicaid) is not known ({why})", MEMBER, "verify the member's plan with the payer")
LINE_UNKNOWN_VERDICT = _says("line-unknown-verdict", SUMMARY, "{verdict} if {a_lines} plan", "medical policy "
                             "{policy}, Coverage; the lines: " + POLICY_FILE + ", lines_of_business")
LINE_UNKNOWN_REASON = _says("line-unknown-reason", REASON, "Not known: the plan's line of business ({why}). Medical "
                            'policy {policy} "{title}" governs {lines} plans; if the plan is one: {reason}',
                            POLICY_FILE + ", lines_of_business; the line: " + MEMBER)
LINE_UNKNOWN = _says("line-unknown", DETAIL, "**Line of business:** not known ({why}). Medical policy {policy} governs "
                     "{lines} plans, and its position stands only if the plan is one; {others}.",
                     MEMBER + "; " + POLICY_FILE + ", lines_of_business and governed_elsewhere")
LINE_OTHER = _says("line-other", DETAIL, "for {a_line}, {rules}", POLICY_FILE + ", governed_elsewhere and "
                   "national_coverage")
MEDICARE_DECIDES = _says("medicare-decides", DETAIL, "{ncd} decides the indications it names", "42 CFR "
                         "422.101(b)(1): Medicare Advantage plans comply with national coverage determinations; the "
                         "NCD as medical policy {policy} quotes it")

# ---------------------------------------------------------------------------------------------- Medicare

MEDICARE_BINDS = _says("medicare-binds", DETAIL, "**Medicare:** {ncd} binds Medicare and Medicare Advantage plans.",
                       "42 CFR 422.101(b)(1): Medicare Advantage plans comply with national coverage determinations")
NCD_NAMED_REASON = _says("ncd-named-reason", REASON, "The order's indication, {group}, is one of them.",
                         "the indication groups: " + POLICY_FILE + ", national_coverage.indications")
NCD_NAMED = _says("ncd-named", DETAIL, "{diagnosis} falls under {group}, an indication the NCD names as not covered.",
                  "the diagnosis: " + MEMBER + "; its group: " + POLICY_FILE + ", national_coverage.indications")
NCD_OTHER_REASON = _says("ncd-other-reason", REASON, "{ncd} finds these devices not reasonable and necessary for the "
                         "indications it names ({named}); {which}, and {ncd} does not address other uses. Medical "
                         'policy {policy}: "{discretion}"', "the NCD as medical policy {policy} quotes it "
                         "(Rationale); the last sentence: medical policy {policy}, {discretion_source}")
NCD_OTHER = _says("ncd-other", DETAIL, "It names as not covered: {named}. {which}: the NCD does not address this "
                  "use, and local Medicare contractor discretion may apply. Medical policy {policy}, "
                  '{discretion_source}: "{discretion}"', "the NCD as medical policy {policy} quotes it; "
                  "medical policy {policy}, {discretion_source}")
NCD_NONE_FALLS = _says("ncd-none-falls", DETAIL, "No diagnosis of the patient falls in these", MEMBER)
NCD_NONE_CODED = _says("ncd-none-coded", DETAIL, "No ICD-10-CM diagnosis of the patient is known", MEMBER)
NCD_OTHER_UNKNOWN = _says("ncd-other-unknown", UNKNOWN, "Medicare coverage of this use: {ncd} does not address it, "
                          "and local Medicare contractor discretion may apply", "medical policy {policy}, "
                          "{discretion_source}", "verify coverage of this use with the plan, under its Medicare "
                          "contractor's rules")
NCD_INDICATION_UNKNOWN = _says("ncd-indication-unknown", UNKNOWN, "the order's indication: no ICD-10-CM diagnosis "
                               "came with the order or the patient's active conditions", SERVICE,
                               "give the order's reason, coded in ICD-10-CM ({ncd} decides {named})")
INDICATION = _says("indication", DETAIL, "**Indication:** {diagnosis} falls under {group}, one of the indications for "
                   "which {ncd} finds these devices not reasonable and necessary. The coverage statement of medical "
                   "policy {policy} names no indication.", "the diagnosis: " + MEMBER + "; its group: " + POLICY_FILE
                   + ", national_coverage.indications; the NCD as medical policy {policy} quotes it")

# --------------------------------------------------------------------------------------- matched by description

WEAK_REASON = _says("weak-reason", REASON, 'Not known: whether the order, described as "{text}", is an item of '
                    'medical policy {policy} "{title}" (its billing code would say). If it is: {reason}',
                    POLICY_FILE + ", text.weak")
WEAK_UNKNOWN = _says("weak-unknown", UNKNOWN, 'whether the order is for an item of this policy: its description '
                     '"{text}" names "{term}", which may describe this policy\'s devices or another item',
                     POLICY_FILE + ", text.weak and codes",
                     "give the order's billing code; this policy's items are {codes}")

# ------------------------------------------------------------------------------------------- state mandates

MANDATE_COVERED_REASON = _says("mandate-covered-reason", REASON, "May be covered under {citation}, which reaches "
                               '{whom}, as an exception to medical policy {policy} "{title}".',
                               "{citation}, as {quoted_from} quotes it")
MANDATE_PA_VERDICT = _says("mandate-pa-verdict", SUMMARY, "{verdict}, plan requires prior auth", MANDATE_FILE
                           + ", covered_verdict and plan_requirements")
MANDATE_CONDITIONAL_REASON = _says("mandate-conditional-reason", REASON, "{reason} {citation} may require coverage "
                                   "for {whom}; not known: {unknown}.", "{citation}, as {quoted_from} quotes it; "
                                   "what is not known: " + SERVICE)
MANDATE_QUOTED = _says("mandate-quoted", DETAIL, '{citation}, as {quoted_from} quotes it: "{quote}"',
                       "{citation}, as {quoted_from} quotes it")
MANDATE_APPLIES = _says("mandate-applies", DETAIL, "**{title}: the order may be covered.**", MANDATE_FILE)
MANDATE_ALL_MET = _says("mandate-all-met", DETAIL, "Every condition is met:", MANDATE_FILE)
MANDATE_MAY_APPLY = _says("mandate-may-apply", DETAIL, "**{title}: may apply.**", MANDATE_FILE)
MANDATE_MET = _says("mandate-met", DETAIL, "Met:", MANDATE_FILE)
MANDATE_IF_CONFIRMED = _says("mandate-if-confirmed", DETAIL, "If what is not known (below) is confirmed, the order "
                             "may be covered under the mandate; otherwise the coverage statement of medical policy "
                             "{policy} stands.", SERVICE)
MANDATE_RULED_OUT = _says("mandate-ruled-out", DETAIL, "**{title}: does not apply** ({citation}):", MANDATE_FILE)
PLAN_REQUIREMENT = _says("plan-requirement", DETAIL + " and reason", "Plan requirement ({source}): {text}",
                         MANDATE_FILE + ", plan_requirements")

SITUS_UNKNOWN = _says("situs-unknown", CONDITION, "the plan's situs state (whose insurance law governs the plan) is "
                      "not known ({why})", MEMBER, "verify with the payer in which state the member's plan is sitused")
SITUS_MET = _says("situs-met", CONDITION, "the plan is sitused in {state}", MEMBER)
SITUS_FAILED = _says("situs-failed", CONDITION, "the plan is sitused in {situs}, not {state}", MEMBER)
LINE_MET = _says("line-met", CONDITION, "the plan is {line}", MEMBER)
LINE_MEDICARE = _says("line-medicare", CONDITION, "the plan is a Medicare plan, which state insurance law does not "
                      "reach", "federal preemption of state law for Medicare plans (42 U.S.C. 1395w-26(b)(3))")
LINE_FAILED = _says("line-failed", CONDITION, "the plan is {line}, and the mandate reaches {lines} plans only",
                    "{citation}, as {quoted_from} quotes it; the line: " + MEMBER)
FUNDING_UNKNOWN = _says("funding-unknown", CONDITION, "plan funding (fully insured or self-funded) is not known "
                        "({why})", MEMBER, "verify the member's plan with the payer")
FUNDING_MET = _says("funding-met", CONDITION, "the plan is {funding}", MEMBER)
FUNDING_FAILED = _says("funding-failed", CONDITION, "the plan is {funding}, and the mandate reaches {fundings} plans "
                       "only{erisa}", "{citation}, as {quoted_from} quotes it; ERISA (29 U.S.C. 1144) for self-funded "
                       "plans")
PRODUCT_UNKNOWN = _says("product-unknown", CONDITION, "the plan's product ({products}) is not known ({why})", MEMBER,
                        "verify the member's plan with the payer")
PRODUCT_MET = _says("product-met", CONDITION, "the plan is {a_product}", MEMBER)
PRODUCT_FAILED = _says("product-failed", CONDITION, "the plan is {a_product}, and the mandate reaches {products} "
                       "plans only", "{citation}, as {quoted_from} quotes it")
PLAN_DATE_UNKNOWN = _says("plan-date-unknown", CONDITION, "the plan's issue or renewal date is not known ({why})",
                          MEMBER,
                          "verify the start of the member's current plan year with the payer")
PLAN_DATE_MET = _says("plan-date-met", CONDITION, "the plan year began {start}, on or after {since}", MEMBER)
PLAN_DATE_FAILED = _says("plan-date-failed", CONDITION, "the plan year began {start} and has not renewed by the "
                         "order's date; the mandate reaches plans issued or renewed on or after {since}",
                         "{citation}, as {quoted_from} quotes it")
PLAN_RENEWAL_UNKNOWN = _says("plan-renewal-unknown", CONDITION, "the plan began {start}, before {since}, and whether "
                             "it was renewed since is not known", MEMBER,
                             "verify the start of the member's current plan year with the payer")
AGE_UNKNOWN = _says("age-unknown", CONDITION, "the patient's age on the order's date is not known (no full birth "
                    "date)", MEMBER, "record the patient's birth date in the EHR")
AGE_MET = _says("age-met", CONDITION, "the patient is {age} on the order's date: a child by the plan's rule (under "
                "{limit}; the Act, as the policy quotes it, gives no age for \"children\")", AGE_SETTING)
AGE_VERIFY = _says("age-verify", CONDITION, "the patient is {age} on the order's date: the Act, as the policy quotes "
                   "it, gives no age for \"children\", and the plan's rule counts patients under {limit} as children",
                   AGE_SETTING + "; " + MANDATE_FILE + ", children_verify_under",
                   "verify with the payer whether the mandate reaches a patient aged {age}")
AGE_FAILED = _says("age-failed", CONDITION, "the patient is {age} on the order's date: by the plan's rule a patient of "
                   "{verify_under} or older is not a child", MANDATE_FILE + ", children_verify_under")
DIAGNOSIS_MET = _says("diagnosis-met", CONDITION, "{diagnosis} is a qualifying diagnosis ({group}, on the plan's "
                      "diagnosis screen)", "the diagnosis: " + MEMBER + "; the screen: " + MANDATE_FILE
                      + ", qualifying_diagnoses, or CDS_MANDATE_DIAGNOSES_FILE")
DIAGNOSIS_NONE_FOUND = _says("diagnosis-none-found", CONDITION, "the plan's diagnosis screen found no qualifying "
                             "diagnosis among the patient's recorded diagnoses ({codes}); what would qualify: a "
                             "disease, syndrome or disorder that includes {label}",
                             MANDATE_FILE + ", qualifying_diagnoses; the diagnoses: " + MEMBER, "{resolve}")
DIAGNOSIS_NONE_RECORDED = _says("diagnosis-none-recorded", CONDITION, "no diagnosis of the patient is recorded (no "
                                "active condition, no reason for the order); what would qualify: a disease, syndrome "
                                "or disorder that includes {label}", MEMBER, "{resolve}")
DIAGNOSIS_UNOBTAINED = _says("diagnosis-unobtained", CONDITION, "a qualifying diagnosis is not known: the patient's "
                             "active conditions could not be obtained", MEMBER, "{resolve}")
DIAGNOSIS_UNSCREENED = _says("diagnosis-unscreened", CONDITION, "a qualifying diagnosis is not known: some of the "
                             "patient's diagnoses have no ICD-10-CM code to screen", MEMBER, "{resolve}")
DIAGNOSIS_RESOLVE = _says("diagnosis-resolve", CONDITION, "if the patient has a diagnosis with {label}, give it as the "
                          "order's reason, coded in ICD-10-CM", SERVICE)
