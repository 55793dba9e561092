"""``benchmarks/modnet.py --outer-seed`` evaluates a settled protocol on fresh outer folds: they must
partition the rows, differ from the default folds, and go to their own results file."""

from __future__ import annotations

import numpy as np
import pytest

from matflow.ml import train as pipeline


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("modnet")


def test_fresh_folds_partition_the_rows_and_differ_from_the_official_ones(bench):
    folds, text = bench.outer_folds("alexandria_cv300", 1)
    n = len(pipeline.DATASET_SPECS["alexandria_cv300"].loader())
    tests = [np.asarray(te) for _, te in folds]
    assert len(folds) == 5
    assert np.array_equal(np.sort(np.concatenate(tests)), np.arange(n))  # every row tested exactly once
    for tr, te in folds:
        assert not set(tr) & set(te)
    default = pipeline.DATASET_SPECS["alexandria_cv300"].folds(n)
    assert any(not np.array_equal(np.sort(a), np.sort(b[1])) for a, b in zip(tests, default, strict=True))
    again, _ = bench.outer_folds("alexandria_cv300", 1)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))
    assert "random_state=1" in text and "not the dataset's default folds" in text


def test_fresh_folds_have_their_own_results_file_and_protocol(bench):
    path = bench._results_path("matbench_phonons", "ens10wide", "structure-chgnet-full", True, 1)
    assert path.name == "modnet_matbench_phonons_ens10wide_structure-chgnet-full_nested_outerseed1.json"
    assert bench._results_path("matbench_phonons", "ens10wide", "structure-chgnet-full", True).name.endswith(
        "_nested.json")
    _, text = bench.outer_folds("matbench_phonons", 1)
    protocol = pipeline.protocol_text("matbench_phonons", search=True, folds_text=text)
    assert protocol.startswith("fresh outer folds") and "official" not in protocol
    notes = bench._notes("ens10wide", True, outer_seed=1)
    assert any("nothing in this protocol was chosen by looking at these folds" in n for n in notes)
    assert not any("protocol change made with knowledge" in n for n in notes)
