"""Entry point: `python server.py --help` lists the commands."""

import sys

from vms.cli import main

if __name__ == "__main__":
    sys.exit(main())
