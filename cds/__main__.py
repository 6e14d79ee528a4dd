"""`python -m cds`: the `cds` command."""

from cds.tools.cli import main

main(prog_name="cds")
