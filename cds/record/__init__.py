"""Records of every hook call, decision and feedback, and seen JWT ids: SQLite by default, PostgreSQL at scale."""

from cds.record.records import DecisionRecord, FeedbackRecord, HookCall, JudgedOrder, feedback_records
from cds.record.store import FeedbackReceipt, PolicyStats, PurgeReport, Store, StoreUnavailable, store_failures

__all__ = [
    "DecisionRecord", "FeedbackReceipt", "FeedbackRecord", "HookCall", "JudgedOrder", "PolicyStats", "PurgeReport",
    "Store", "StoreUnavailable", "feedback_records", "store_failures",
]
