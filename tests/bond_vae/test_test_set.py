"""The embedded AIB9 test trajectories: independent MD of the training data's conditions."""

from __future__ import annotations

import json

import numpy as np
from bond_vae.data.dataset import DEFAULT_DATASET

TEST_SET = DEFAULT_DATASET.with_name("aib9_test.npz")


def metadata(archive: np.lib.npyio.NpzFile) -> dict:
    return json.loads(str(archive["metadata"]))


def test_test_trajectories_share_the_molecule_and_conditions_but_no_seed_with_training():
    with np.load(DEFAULT_DATASET) as training, np.load(TEST_SET) as test:
        for key in ("atomic_numbers", "atom_names", "residue_ids", "residue_names", "bonds"):
            np.testing.assert_array_equal(test[key], training[key])
        train_replicas = metadata(training)["config"]["replicas"]
        test_replicas = metadata(test)["config"]["replicas"]
        conditions = [(r["start"], r["temperature_k"]) for r in test_replicas]  # six, one replica each
        assert [(r["start"], r["temperature_k"]) for r in train_replicas] == conditions * 2  # two replicas each
        assert not {r["seed"] for r in test_replicas} & {r["seed"] for r in train_replicas}
        assert test["coords"].shape == (1500, 58, 3) and np.bincount(test["replica"]).tolist() == [250] * 6
        # 1 ns per test replica, a frame every 4 ps; 2 ns per training replica, a frame every 2.5 ps
        assert (metadata(test)["time_between_frames_ns"], metadata(test)["simulated_ns_per_replica"]) == (0.004, 1.0)
        assert (metadata(training)["time_between_frames_ns"], metadata(training)["simulated_ns_per_replica"]) == (
            0.0025,
            2.0,
        )
        assert training["coords"].shape == (9600, 58, 3) and np.bincount(training["replica"]).tolist() == [800] * 12
        assert not np.isin(test["coords"][:, 0, 0], training["coords"][:, 0, 0]).any()
