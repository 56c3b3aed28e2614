"""`reconciler validate [PATH...]`: check manifests, print every problem (one line each), exit 0 or 1.

Warnings (`file:line:col: warning: ...`) are printed with the problems but do not fail validation.

Meant for people, editors (file:line:column) and CI (`--json`, and the pre-commit hook).
"""

from __future__ import annotations

import argparse
import json
import sys

from reconciler.errors import ExitCode


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths", nargs="*", metavar="PATH", help="manifest files or directories (default: ./manifests)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object (for CI)")


def run(args: argparse.Namespace) -> int:
    import gc

    from reconciler import manifest
    from reconciler.manifest.problems import Problem

    paths = args.paths or list(manifest.DEFAULT_PATHS)
    gc.disable()  # loading allocates many small objects and frees none: collections only cost time
    try:
        result = manifest.load(paths)
    finally:
        gc.enable()
    desired = result.desired
    if args.json:
        report = {
            "valid": desired is not None,
            "files": list(result.files),
            "instances": len(desired.instances) if desired else 0,
            "nodes": len(desired.nodes) if desired else 0,
            "problems": [p.to_json() for p in result.problems],
            "warnings": [p.to_json() for p in result.warnings],
        }
        print(json.dumps(report, indent=2))
        return ExitCode.OK if desired is not None else ExitCode.ERROR
    lines = sorted((*result.problems, *result.warnings), key=Problem.sort_key)
    sys.stdout.write("".join(f"{p}\n" for p in lines))
    w = len(result.warnings)
    warned = f", {w} warning{'s' if w != 1 else ''}" if w else ""
    if desired is None:
        n = len(result.problems)
        print(f"{n} problem{'s' if n != 1 else ''} found{warned}", file=sys.stderr)
    else:
        print(
            f"valid: {len(desired.instances)} instances, {len(desired.nodes)} nodes "
            f"in {len(result.files)} files{warned}"
        )
    return ExitCode.OK if desired is not None else ExitCode.ERROR
