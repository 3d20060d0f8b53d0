"""research/mutation_check.py: every planted bug's anchor is in the code, and two planted bugs
are caught by the tests named for them (the script runs them all; README "Testing")."""

from pathlib import Path

import pytest

from research.mutation_check import MUTANTS, check_mutant

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", list(MUTANTS))
def test_every_mutant_applies_to_the_current_code(name):
    # a patch whose anchor no longer matches raises: the check must not test an unpatched copy
    texts: dict[str, str] = {}
    for patch in MUTANTS[name].patches:
        before = texts.get(patch.path, (ROOT / patch.path).read_text())
        texts[patch.path] = patch.apply(before)
        assert texts[patch.path] != before
    for path, text in texts.items():
        compile(text, path, "exec")  # the mutant is still Python: its tests fail, not crash


@pytest.mark.parametrize("name", ["lookahead", "no_daily_loss_block"])
def test_planted_bug_is_caught(name):
    row = check_mutant(MUTANTS[name])
    assert row["missing"] == [], row
    assert row["caught"] is True, row
    assert row["failed"], row  # pytest named the failing test
