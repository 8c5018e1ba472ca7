"""python -m ojsctrl."""

import sys

from ojsctrl.cli import main

sys.exit(main())
