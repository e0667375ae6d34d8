"""`python -m minidit.superres`: the super-resolution experiment of notebook 09 (see minidit.superres)."""

import sys

from minidit.superres.experiment import main

sys.exit(main())
