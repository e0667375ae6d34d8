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


def use_course_env() -> str:
    """Honour $MINIDIT_IMPL (minidit | solutions | student) for this run: whose exercised pieces run.

    Every `python -m minidit...` entry point calls this first, so `MINIDIT_IMPL=student python -m
    minidit.train` trains with the student's code. The course switch (minidit.course) sits above the
    core; this is the one place the core reaches up to it.
    """
    from minidit import course  # the seam to the layer above (tests/test_layering.py allows exactly this)

    return course.apply_env()
