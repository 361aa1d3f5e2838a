"""A contract every entry of the placement registry keeps: its row in the names table, refusals with reasons
for what it never runs or cannot run here, and, where it runs here, a real session that opens the built
artifact, runs any batch size and reads back the precision it executed."""

from __future__ import annotations

import numpy as np
import pytest

from tuner import names
from tuner.candidate import Candidate
from tuner.errors import UnsupportedCombination
from tuner.runtimes import registry as runtimes

CASES = [(p, x) for p in runtimes.PLACEMENTS for x in names.PRECISIONS]


def test_registry_and_names_table_agree():
    assert set(runtimes.PLACEMENTS) == set(names.PLACEMENTS)
    for name, p in runtimes.PLACEMENTS.items():
        assert p.name == name and p.precisions == names.PLACEMENTS[name].precisions
        assert set(p.precisions) <= set(names.PRECISIONS)


@pytest.mark.parametrize(("placement", "precision"), CASES)
def test_refusals_have_reasons_and_the_rest_runs(placement, precision, workload):
    from tuner.measure import open_session
    from tuner.passes.chain import build

    p = runtimes.PLACEMENTS[placement]
    why = p.unavailable() or p.refuse(precision)
    c = Candidate(precision=precision, placement=placement, graph_opt="all", threads=1)
    if precision not in p.precisions:  # never runs, on any machine: refused for the precision itself
        assert precision in (p.refuse(precision) or "")
    if why:
        assert isinstance(why, str) and len(why.split()) >= 4  # a reason, not a code
        with pytest.raises(UnsupportedCombination, match=placement):
            runtimes.check_supported(c)
        return
    session = open_session(build(workload, c))
    try:
        for n in (1, 3):  # a batch other than the one first seen: dynamic or recompiled, never wrong
            logits = session.predict(workload.data.example(n))
            assert logits.shape == (n, workload.data.num_classes) and np.isfinite(logits).all()
        assert session.executed_precision == precision  # read back from the runtime, fully optimized graph
    finally:
        session.close()
