"""The relax flow scales out on a Dask LocalCluster and gathers the same summary as a serial run."""

from __future__ import annotations

import json

from pymatgen.core import Lattice, Structure


def _tiny_cells(folder) -> list[str]:
    """Three 2-atom cells (rock salt, CsCl, diamond Si), slightly off their CHGNet minimum."""
    cells = {
        "NaCl": Structure(Lattice.from_parameters(4.0, 4.0, 4.0, 60, 60, 60), ["Na", "Cl"],
                          [[0, 0, 0], [0.5, 0.5, 0.5]]),
        "CsCl": Structure(Lattice.cubic(4.2), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        "Si": Structure(Lattice.from_parameters(3.9, 3.9, 3.9, 60, 60, 60), ["Si", "Si"],
                        [[0, 0, 0], [0.26, 0.25, 0.25]]),
    }
    paths = []
    for name, structure in cells.items():
        path = folder / f"{name}.cif"
        structure.to(filename=str(path))
        paths.append(str(path))
    return paths


def test_task_runner_follows_settings():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from flows.runners import chunk, task_runner_from_settings
    from matflow.settings import Settings

    assert isinstance(task_runner_from_settings(Settings(task_runner="local")), ThreadPoolTaskRunner)
    remote = task_runner_from_settings(Settings(task_runner="dask", dask_address="tcp://h:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://h:8786"
    local = task_runner_from_settings(Settings(task_runner="dask", dask_workers=3, torch_threads=0))
    assert local.cluster_kwargs["n_workers"] == 3 and local.cluster_kwargs["threads_per_worker"] == 1
    assert local.cluster_kwargs["env"]["MATFLOW_TORCH_THREADS"] == "1"
    assert chunk(list(range(5)), 2) == [[0, 1], [2, 3], [4]]
    assert chunk(list(range(5))) == [[0, 1], [2, 3], [4]]  # outside a flow: ~4 chunks for 1 slot


def test_relax_flow_on_two_dask_workers(tmp_path):
    from flows.atomistic import relax
    from flows.runners import with_settings_runner
    from matflow.settings import Settings

    inputs = _tiny_cells(tmp_path) + [str(tmp_path / "missing.cif")]
    out = tmp_path / "out"
    on_dask = with_settings_runner(relax, Settings(task_runner="dask", dask_workers=2))
    state = on_dask(inputs=inputs, outdir=str(out), optimizer="FIRE", fmax_eV_per_A=0.1,
                    max_steps=25, chunk_size=1, return_state=True)
    assert state.is_completed() and state.message == "3 ok, 1 failed"
    summary = state.result()
    assert summary["n_ok"] == 3 and summary["n_failed"] == 1
    assert summary["failures"] == [{"source": str(tmp_path / "missing.cif"), "reason": "file not found"}]
    assert sorted(r["formula"] for r in summary["results"]) == ["CsCl", "NaCl", "Si"]
    for row in summary["results"]:
        assert row["n_atoms"] == 2 and row["final_energy_eV"] <= row["initial_energy_eV"] + 1e-6
    # the chunks ran in parallel; the summary file on disk still holds every structure
    on_disk = json.loads((out / "relax_summary.json").read_text())
    assert on_disk["n_ok"] == 3 and on_disk["n_failed"] == 1
