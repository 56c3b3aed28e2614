"""`reconciler schema`: print the manifest JSON Schema (for editors and other tools)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--path", action="store_true", help="print where the schema file is instead")


def run(args: argparse.Namespace) -> int:
    from reconciler.manifest import schema

    if args.path:
        print(schema.schema_path())
    else:
        sys.stdout.write(schema.schema_text())
    return 0
