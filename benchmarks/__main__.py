"""`python -m benchmarks [--quick] [--json PATH]`: throughput of every architecture, ours vs
the plain way (see `benchmarks/throughput.py`)."""

from benchmarks.throughput import main

raise SystemExit(main())
