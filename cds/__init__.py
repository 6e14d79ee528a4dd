"""Coverage decision support for EHR order entry: a CDS Hooks 2.0 / Da Vinci CRD service."""

__version__ = "0.1.0"
