"""``python -m gpt_from_scratch ...`` is the same as the ``gpt-from-scratch`` command."""

import sys

from .cli import main

sys.exit(main())
