"""The web console at /console: try an order as an EHR sends it, and see how the policies are doing.

Views are in `cds.console.views` (registered by `register_console`); this package's modules import nothing of
Flask's app at import time, so `cds.auth` can use `cds.console.key`.
"""
