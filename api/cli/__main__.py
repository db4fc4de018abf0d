"""`python -m api.cli ...`: the same as the `kgreport` command."""

from api.cli import main

main()
