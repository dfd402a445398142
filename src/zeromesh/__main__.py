"""`python -m zeromesh` runs the CLI (and the daemons, which `up` starts this way)."""

import sys

from zeromesh.cli.main import main

sys.exit(main())
