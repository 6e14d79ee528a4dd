"""Medical policies as data and the pure engine that applies them: order x member facts x policies -> Decision.

No I/O and no third-party imports beyond what reading policy files needs (pydantic, PyYAML): the clock and the
decision's id are handed in, so a decision is a function of its inputs alone.
"""

from cds.policy.decision import Decision, Match, Outcome, Unknown
from cds.policy.engine import CompiledPolicy, PolicyMatch, decide, match_order
from cds.policy.facts import CoverageFacts, Diagnosis, MemberFacts, Order
from cds.policy.loader import PolicyError, load_policies

__all__ = ["CompiledPolicy", "CoverageFacts", "Decision", "Diagnosis", "Match", "MemberFacts", "Order", "Outcome",
           "PolicyError", "PolicyMatch", "Unknown", "decide", "load_policies", "match_order"]
