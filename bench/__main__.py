"""``python -m bench all [--quick] [--device cpu|cuda|auto] ...``: every benchmark table (see bench/suite.py)."""

import sys

from bench.suite import main

sys.exit(main())
