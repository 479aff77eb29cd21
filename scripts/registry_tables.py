"""Render README.md's tables of methods, schemes, models and datasets from the registries (explorer/docs.py).

    .venv/bin/python scripts/registry_tables.py           # print README.md as it should be
    .venv/bin/python scripts/registry_tables.py --write   # rewrite README.md in place
    .venv/bin/python scripts/registry_tables.py --check   # exit 1 when README.md disagrees with the registries
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # runnable from a checkout, installed or not

from explorer.docs import sync  # noqa: E402

README = ROOT / "README.md"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 when README.md's tables are stale")
    mode.add_argument("--write", action="store_true", help="rewrite the tables in README.md")
    args = ap.parse_args(argv)
    text = README.read_text()
    fresh = sync(text)
    if args.check:
        if fresh != text:
            print("README.md's registry tables differ from the registries: run "
                  "`python scripts/registry_tables.py --write`", file=sys.stderr)
            return 1
        print("README.md's registry tables match the registries")
    elif args.write:
        if fresh != text:
            README.write_text(fresh)
        print(f"{README.name}: {'rewritten' if fresh != text else 'already up to date'}")
    else:
        sys.stdout.write(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
