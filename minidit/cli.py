"""The argument parser of minidit's command lines: user errors in one line, no usage block, exit status 2."""

from __future__ import annotations

import argparse
import sys


class ArgumentParser(argparse.ArgumentParser):
    """argparse.ArgumentParser whose `error` prints `prog: error: message` and a pointer to --help.

    The stock parser prints the whole usage first, which for `minidit.train` (one flag per config
    field) is thirty lines that bury the one line that matters.
    """

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n(see {self.prog} --help)\n")

    def fail(self, message: str, status: int = 1):
        """A failure of the run itself (not of the flags): the message, then exit with `status`."""
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        self.exit(status)
