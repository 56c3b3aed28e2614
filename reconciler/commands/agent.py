"""`reconciler agent`: the far side of a remote node, on the stdio of an SSH channel (not for people)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from reconciler.remote import agent

    return agent.main()
