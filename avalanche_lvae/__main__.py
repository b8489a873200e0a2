"""``python -m avalanche_lvae``: the ``avalanche-lvae`` command (see :mod:`avalanche_lvae.experiments.cli`)."""

import sys

from .experiments.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m avalanche_lvae"))
