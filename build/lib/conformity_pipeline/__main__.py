"""`python -m conformity_pipeline` runs the same command as `conformity-pipeline`."""

from conformity_pipeline.cli import main

main()
