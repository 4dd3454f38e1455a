"""`python -m work365_fn`: see cli.py."""

import sys

from .cli import main

sys.exit(main())
