"""`python -m cli` does what the `poolctl` console script does."""

from cli.main import run

run()
