"""`python -m work365_fn`: the CLI (work365_fn/entrypoints/cli/)."""

import sys

from work365_fn.entrypoints.cli.main import main

sys.exit(main())
