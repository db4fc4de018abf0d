"""`python -m kgreport.api.cli ...`: the same as the `kgreport` command."""

from kgreport.api.cli import main

main()
