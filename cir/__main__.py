"""`python -m cir ...` (and `torchrun -m cir ...`): the console script."""

import sys

from .cli import main

sys.exit(main())
