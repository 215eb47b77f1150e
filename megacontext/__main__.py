"""`python -m megacontext ...` runs the command line (see `megacontext --help`)."""

from .cli import main

raise SystemExit(main())
