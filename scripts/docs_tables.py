"""Write the tables that code generates into the docs: the error codes (docs/errors.md, from the
error tree) and the settings (docs/configuration.md, from Settings).

Usage: python scripts/docs_tables.py          # rewrite what is stale
       python scripts/docs_tables.py --check  # exit 1 and name the stale tables, write nothing
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from musetalk_server.docs_tables import update_docs

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a table is stale")
    args = parser.parse_args()
    changed = update_docs(REPO, check=args.check)
    for table in changed:
        print(f"{'stale' if args.check else 'wrote'}: {table}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
