"""`python -m vne_inline.cli`: the same command line as `vne-inline`."""

from vne_inline.cli import app

app(prog_name="vne-inline")
