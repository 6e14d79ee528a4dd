"""Medical policies as data and the pure engine that applies them: order x member facts x policies -> Decision."""

from cds.policy.decision import Decision, Match, Outcome, Unknown
from cds.policy.engine import CompiledPolicy, decide, judge, match_order
from cds.policy.loader import PolicyError, load_policies

__all__ = ["CompiledPolicy", "Decision", "Match", "Outcome", "PolicyError", "Unknown", "decide", "judge",
           "load_policies", "match_order"]
