"""python -m codext [train|eval|predict] [flags]: see codext/cli.py (no arguments: train)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
