"""Load and latency benchmark of the service against a bare Flask endpoint, plus in-process figures."""
