"""The record step: every hook call, decision and feedback, and seen JWT ids; SQLite by default, PostgreSQL at
scale. `Recorder.record` is the step's entry point."""

from cds.record.recorder import Recorder
from cds.record.records import DecisionRecord, FeedbackRecord, HookCall, JudgedOrder, feedback_records
from cds.record.store import FeedbackReceipt, PolicyStats, PurgeReport, Store, StoreUnavailable, store_failures

__all__ = [
    "DecisionRecord", "FeedbackReceipt", "FeedbackRecord", "HookCall", "JudgedOrder", "PolicyStats", "PurgeReport",
    "Recorder", "Store", "StoreUnavailable", "feedback_records", "store_failures",
]
