"""The payer's view: decisions over time by policy, outcome and hook; feedback and override rates by policy
and by reason; recent decisions with their card and assertion (ids only, never patient data)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from werkzeug.datastructures import MultiDict

from cds.record import Store
from cds.record.store import PolicyStats, StoreUnavailable

RECENT = 50
CHART_WIDTH, BAR_HEIGHT, LABEL_WIDTH = 420, 22, 150


@dataclass(frozen=True)
class Filters:
    since: str = ""  # YYYY-MM-DD, UTC
    until: str = ""  # YYYY-MM-DD, UTC, that day included
    policy: str = ""
    outcome: str = ""
    client: str = ""
    problems: tuple[str, ...] = ()

    @classmethod
    def from_args(cls, args: MultiDict[str, str]) -> Filters:
        values = {name: args.get(name, "").strip()[:200] for name in ("since", "until", "policy", "outcome", "client")}
        problems = []
        for name in ("since", "until"):
            if values[name] and _day(values[name]) is None:
                problems.append(f"{name}: {values[name]!r} is not a date (YYYY-MM-DD)")
                values[name] = ""
        return cls(**values, problems=tuple(problems))

    def query(self) -> dict[str, Any]:
        """The store's keyword arguments: `until` includes its day."""
        since, until = _day(self.since), _day(self.until)
        return {"since": since, "until": until + timedelta(days=1) if until else None,
                "policy_id": self.policy or None, "outcome": self.outcome or None, "client": self.client or None}


def report(store: Store, filters: Filters) -> dict[str, Any]:
    """Everything the insights page shows, or the reason the store could not be read."""
    try:
        stats, unmatched = store.stats(**filters.query())
        counts = store.decision_counts(**filters.query())
        feedback = store.feedback_counts(**filters.query())
        recent = store.decisions(**filters.query(), limit=RECENT)
        clients = store.clients()
    except StoreUnavailable:
        return {"filters": asdict(filters), "unavailable": True}
    policies = per_policy(stats, counts, feedback)
    return {
        "filters": asdict(filters), "unavailable": False, "counts": counts, "policies": policies,
        "reasons": override_reasons(feedback), "recent": recent, "clients": clients,
        "unmatched_feedback": unmatched,
        "outcomes": sorted({row["outcome"] for row in counts} | {"not-covered", "covered", "conditional"}),
        "days_chart": days_chart(counts), "rates_chart": rates_chart(policies),
        "reasons_chart": bars_chart([(r["label"], r["entries"]) for r in override_reasons(feedback)]),
    }


def per_policy(stats: list[PolicyStats], counts: list[dict[str, Any]],
               feedback: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per policy: decisions by outcome and by hook, how many got feedback, were accepted, were overridden; the
    override rate as `cds audit stats` gives it (decisions overridden of those whose card got feedback)."""
    by_hook: dict[str, Counter[str]] = defaultdict(Counter)
    for row in counts:
        by_hook[row["policy_id"]][row["hook"]] += row["n"]
    accepted: Counter[str] = Counter()
    for row in feedback:
        if row["outcome"] == "accepted":
            accepted[row["policy_id"]] += row["decisions"]
    return [{"policy_id": s.policy_id, "decisions": s.decisions, "by_outcome": s.by_outcome,
             "by_hook": dict(by_hook[s.policy_id]), "with_feedback": s.with_feedback, "overridden": s.overridden,
             "accepted": accepted[s.policy_id], "override_rate": s.override_rate,
             "accept_rate": accepted[s.policy_id] / s.with_feedback if s.with_feedback else None}
            for s in stats]


def override_reasons(feedback: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Overrides by reason code (all policies chosen), most frequent first."""
    totals: Counter[tuple[str, str]] = Counter()
    for row in feedback:
        if row["outcome"] == "overridden":
            code = row["override_code"] or ""
            totals[(code, row["override_display"] or code or "no reason given")] += row["entries"]
    return [{"code": code, "label": label, "entries": n} for (code, label), n in totals.most_common()]


def days_chart(counts: list[dict[str, Any]]) -> dict[str, Any]:
    """Decisions per day as stacked bars by outcome: SVG geometry for the template."""
    per_day: dict[str, Counter[str]] = defaultdict(Counter)
    for row in counts:
        per_day[row["day"]][row["outcome"]] += row["n"]
    days = sorted(per_day)
    peak = max((sum(c.values()) for c in per_day.values()), default=0)
    height, width = 160, max(len(days), 1)
    step = min(48.0, (CHART_WIDTH - 40) / width)
    bars = []
    for index, day in enumerate(days):
        top = height
        for outcome, n in sorted(per_day[day].items()):
            bar_height = round(n / peak * (height - 10)) if peak else 0
            top -= bar_height
            bars.append({"x": round(30 + index * step, 1), "y": top, "w": round(max(step * 0.85, 1), 1),
                         "h": bar_height, "outcome": outcome, "title": f"{day}: {n} {outcome}"})
    every = -(-len(days) // 10) or 1  # at most ten day labels
    labels = [{"x": round(30 + i * step, 1), "text": day[5:]} for i, day in enumerate(days) if i % every == 0]
    return {"width": CHART_WIDTH, "height": height + 20, "bars": bars, "labels": labels, "peak": peak}


def rates_chart(policies: list[dict[str, Any]]) -> dict[str, Any]:
    """Accepted and overridden, as shares of each policy's decisions whose card got feedback: horizontal bars."""
    items = []
    for policy in policies:
        for kind, word in (("accept", "accepted"), ("override", "overridden")):
            rate = policy[f"{kind}_rate"] or 0.0
            items.append((f"{policy['policy_id']} {word}", rate, f"{rate:.0%}"))
    return _horizontal(items, 1.0)


def bars_chart(items: list[tuple[str, int]]) -> dict[str, Any]:
    return _horizontal([(label, n, str(n)) for label, n in items], max((n for _, n in items), default=0))


def _horizontal(items: list[tuple[str, float, str]], peak: float) -> dict[str, Any]:
    span = CHART_WIDTH - LABEL_WIDTH - 60
    bars = [{"y": i * BAR_HEIGHT, "w": round(value / peak * span) if peak else 0, "label": label, "value": text}
            for i, (label, value, text) in enumerate(items)]
    return {"width": CHART_WIDTH, "height": max(len(bars), 1) * BAR_HEIGHT, "bars": bars, "x": LABEL_WIDTH}


def _day(text: str) -> datetime | None:
    try:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
    except ValueError:
        return None
