"""`python -m anode_bench.report DIR ...`: the same as the anode-report command."""
from . import main

main()
