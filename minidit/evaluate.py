"""`python -m minidit.evaluate`: kept where it always was; the code lives in minidit.evaluation.evaluate."""

import sys

from minidit.evaluation.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
