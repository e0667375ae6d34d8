"""`python -m minidit.superres`: the super-resolution experiment of notebook 09 (see minidit.superres)."""

import sys

from minidit.superres import main

sys.exit(main())
