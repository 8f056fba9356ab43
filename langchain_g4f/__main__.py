"""``python -m langchain_g4f``: the command line."""

import sys

from langchain_g4f.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
