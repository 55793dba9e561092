"""``benchmarks/sro.py --cutoffs`` goes through the library's parser (the one ``matflow sro simulate``
uses), so the benchmark and the command line cannot drift apart."""

from __future__ import annotations

import pytest

from matflow.sro.energy_model import cutoff_candidates


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("sro")


def test_auto_resolves_to_the_library_candidates(bench):
    args = bench.parse_args(["--part", "crconi", "--cutoffs", "auto", "--cutoff", "5.2"])
    assert args.cutoff_sets == [list(c) for c in cutoff_candidates("fcc", 3.56, 5.2)]
    assert len(args.cutoff_sets) == 3 and args.cutoff_sets[0] == [5.2]
    assert args.cutoffs_reason.startswith("auto")
    assert args.output.name == "sro_crconi.json"


def test_explicit_and_default_cutoffs(bench):
    assert bench.parse_args(["--part", "crconi", "--cutoffs", "5.2,3.0"]).cutoff_sets == [5.2, 3.0]
    default = bench.parse_args(["--part", "crconi", "--cutoff", "4.5"])
    assert default.cutoff_sets == [4.5] and default.cutoffs is None


@pytest.mark.parametrize("bad", ["1,2,3", "five", "-1"])
def test_bad_cutoffs_stop_before_any_work(bench, bad, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(["--part", "crconi", "--cutoffs", bad])
    assert exc.value.code == 2
    assert "--cutoffs" in capsys.readouterr().err
