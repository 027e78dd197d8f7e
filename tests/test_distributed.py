"""Training on several ranks (vstain.distributed): the sharded sampler, a 2-rank gloo run against one process,
resumption after a kill, a failing rank, and ``vstain train`` under torchrun.

Tolerances of the equivalence (float32, gloo, smoke networks, masks of about half of each pair, image buffers of 3):

* one step: every gradient to a relative 1e-5 of its norm (measured: 2e-6);
* 2 epochs = 4 steps of a global batch of 2: the loss history to a relative 1e-5 (measured: 2e-7), every weight to
  5e-5 absolute, a quarter of one Adam step of the learning rate 2e-4 (measured: 3e-8), the generators' outputs on
  a fixed batch and the images in the buffers to 1e-3, an eighth of one 8-bit grey level (measured: 1.2e-6).

The runs are equal to rounding, not bit for bit, and GAN training amplifies rounding: with 4 patches per pair
(8 steps) the loss histories drift apart to a relative 6e-4 by the eighth step, less than one process drifts
from itself on 1 and 2 CPU threads (4e-3: another order of the sums in the convolutions). Excepted are the biases of the convolutions followed by an
instance norm: the norm removes them, their gradient is zero but for rounding, and Adam turns that rounding
into steps of the learning rate's size in either direction; the outputs show that they change nothing.
"""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from ddp_worker import free_port, gradients_rank, train_rank
from test_train import PAIRS, SMOKE, _write_registered_dataset, make_pair
from vstain.cli import main
from vstain.data import PatchSampler
from vstain.distributed import Ranks, failure_message, process_group, ranks_from_environment
from vstain.models import build_networks
from vstain.train import train_model

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent
MODEL = "mod_cyclegan"
EPOCHS = 2
# image buffers of 3: full during the second step, then images are swapped at random (the smoke profile's 50 never
# fill); 2 patches per pair: 2 steps an epoch
TRAINING = dataclasses.replace(SMOKE.training, pool_size=3, patches_per_pair=2)


def masked_pair(pair_id, seed):
    """A pair whose mask covers a disc of about half of it: patches of one batch hold different mask areas."""
    pair = make_pair(pair_id, seed=seed)
    yy, xx = np.mgrid[:48, :48]
    return dataclasses.replace(pair, mask=(yy - 20) ** 2 + (xx - 26) ** 2 < 20 ** 2)


MASKED_PAIRS = [masked_pair("a", 0), masked_pair("b", 1)]


def two_ranks(out_dir, *, model=MODEL, epochs=EPOCHS, failure=None, pairs=MASKED_PAIRS):
    mp.spawn(train_rank, args=(2, free_port(), pairs, str(out_dir), model, TRAINING, epochs, SMOKE.seed,
                               failure), nprocs=2)


def last(folder):
    return torch.load(Path(folder) / "last.pt", weights_only=True)


def normalised_biases(net: nn.Module) -> set[str]:
    """Names of the convolution biases that an instance norm right after removes."""
    found = set()
    for name, module in net.named_modules():
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (first, conv), (_, norm) in zip(children, children[1:]):
                if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and conv.bias is not None \
                        and isinstance(norm, nn.InstanceNorm2d):
                    found.add(f"{name}.{first}.bias" if name else f"{first}.bias")
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run on two gloo ranks and on one process with the same global batches and patches."""
    root = tmp_path_factory.mktemp("ddp")
    two_ranks(root / "two")
    train_model(MASKED_PAIRS, root / "one", MODEL, TRAINING, epochs=EPOCHS, seed=SMOKE.seed, ranks=Ranks(),
                progress=False)
    return root


# --------------------------------------------------------------------------- the sampler's shards


def test_the_shards_of_any_number_of_ranks_put_together_are_the_same_batches():
    pairs = [make_pair("a", shape=(40, 52), seed=0), make_pair("b", shape=(44, 40), seed=1)]
    sampler = PatchSampler(pairs, patch_size=32, patches_per_pair=4, batch_size=4, seed=3)
    whole = list(sampler.epoch(2, shard=(0, 1)))
    assert len(whole) == len(sampler) == 2
    for world_size in (2, 4):
        shares = [list(sampler.epoch(2, shard=(r, world_size))) for r in range(world_size)]
        for index, batch in enumerate(whole):
            for key in ("x", "y", "mask"):
                parts = [share[index][key] for share in shares]
                assert all(p.shape[0] == 4 // world_size for p in parts)
                assert torch.equal(torch.cat(parts), batch[key])
            assert sum((share[index]["pair_ids"] for share in shares), []) == batch["pair_ids"]
    # the ranks draw different patches, and another epoch draws others again
    halves = [next(sampler.epoch(2, shard=(r, 2)))["x"] for r in (0, 1)]
    assert not torch.equal(halves[0], halves[1])
    assert not torch.equal(next(sampler.epoch(3, shard=(0, 1)))["x"], whole[0]["x"])


def test_the_unsharded_epoch_is_the_one_process_sampler_of_before():
    sampler = PatchSampler(PAIRS, patch_size=32, patches_per_pair=2, batch_size=2, seed=5)
    rng = np.random.default_rng([5, 1])
    order = rng.permutation(np.repeat(np.arange(2), 2))
    first = [sampler.sample_patch(int(i), rng)[0] for i in order[:2]]
    assert torch.equal(next(sampler.epoch(1))["x"], torch.from_numpy(np.stack(first)))


@pytest.mark.parametrize("shard, message", [((0, 3), r"batch size 4 .* not a multiple of the 3 ranks"),
                                            ((2, 2), r"needs 0 <= rank < world size")])
def test_a_shard_that_does_not_divide_the_batch_is_refused(shard, message):
    sampler = PatchSampler(PAIRS, patch_size=32, patches_per_pair=4, batch_size=4, seed=0)
    with pytest.raises(ValueError, match=message):
        next(sampler.epoch(0, shard=shard))


def test_ranks_come_from_torchruns_environment_and_bad_values_are_named():
    assert ranks_from_environment({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == Ranks(3, 4, 1)
    assert ranks_from_environment({}) is None
    with pytest.raises(ValueError, match="RANK is not set"):
        ranks_from_environment({"WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="rank 2, world_size 2"):
        ranks_from_environment({"RANK": "2", "WORLD_SIZE": "2"})
    assert "rank 1 of 2 failed: ValueError: bad" in failure_message(Ranks(1, 2), ValueError("bad"))


def test_joining_the_process_group_says_what_is_missing(monkeypatch):
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="MASTER_ADDR is not set: start the ranks with torchrun"):
        with process_group(Ranks(0, 2), "cpu"):
            pass
    if torch.cuda.device_count() < 2:
        with pytest.raises(ValueError, match=r"local rank 1 has no GPU \(\d visible\); ask for as many GPUs as ranks"):
            with process_group(Ranks(1, 2, local_rank=1), "cuda"):
                pass
    with process_group(Ranks(), "cpu") as device:  # one rank: nothing to join
        assert device == torch.device("cpu") and not torch.distributed.is_initialized()


def test_a_global_batch_the_ranks_do_not_divide_stops_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"training\.batch_size.*not a multiple of the 3 ranks"):
        train_model(PAIRS, tmp_path, MODEL, SMOKE.training, epochs=1, seed=0, ranks=Ranks(0, 3), progress=False)
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------- two gloo ranks


@pytest.mark.slow
def test_one_step_on_two_ranks_has_the_gradients_of_one_process_on_the_global_batch(tmp_path):
    # the patches of a batch hold different mask areas, so each rank's masked l1 terms need their share
    sampler = PatchSampler.from_profile(MASKED_PAIRS, TRAINING, seed=3)
    shares = [next(iter(sampler.epoch(1, (r, 2))))["mask"].sum() for r in (0, 1)]
    assert shares[0] != shares[1]
    mp.spawn(gradients_rank, args=(2, free_port(), MASKED_PAIRS, MODEL, TRAINING, 3, str(tmp_path / "two.pt")),
             nprocs=2)
    gradients_rank(0, 1, 0, MASKED_PAIRS, MODEL, TRAINING, 3, str(tmp_path / "one.pt"))
    two, one = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in ("two", "one"))
    nets = build_networks(MODEL, TRAINING, seed=0)
    for name, gradients in one.items():
        skip = normalised_biases(nets[name])
        for key, gradient in gradients.items():
            if key not in skip:
                assert float((two[name][key] - gradient).norm()) <= 1e-5 * float(gradient.norm()), (name, key)


@pytest.mark.slow
def test_two_ranks_train_the_weights_of_one_process_with_the_same_global_batches(runs):
    two, one = last(runs / "two"), last(runs / "one")
    assert two["epoch"] == one["epoch"] == EPOCHS and two["ranks"] == 2 and one["ranks"] == 1
    for row_two, row_one in zip(two["history"], one["history"], strict=True):
        for key in row_one:
            if key != "seconds":
                assert row_two[key] == pytest.approx(row_one[key], rel=1e-5), key
    nets = build_networks(MODEL, SMOKE.training, seed=0)
    compared = 0
    for name, weights in one["state"]["networks"].items():
        skip = normalised_biases(nets[name])
        assert skip, name  # the exception is real: these networks have such biases
        for key, value in weights.items():
            if key not in skip:
                torch.testing.assert_close(two["state"]["networks"][name][key], value, rtol=0, atol=5e-5)
                compared += 1
    assert compared > 30
    batch = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for name in ("G_XY", "G_YX"):
        outputs = []
        for record in (two, one):
            net = build_networks(MODEL, SMOKE.training, seed=0)[name]
            net.load_state_dict(record["state"]["networks"][name])
            with torch.no_grad():
                outputs.append(net(batch))
        torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=1e-3)
    # the checkpoint selection: the same minima at the same epochs
    assert two["best"] == pytest.approx(one["best"], rel=1e-5)
    for component in one["best"]:
        epochs = [torch.load(runs / r / f"best_{component}.pt", weights_only=True)["epoch"] for r in ("two", "one")]
        assert epochs[0] == epochs[1], component
    # the image buffers hold the global batch's images, as in one process, and drew the same swaps
    for name in ("X", "Y"):
        assert len(one["state"]["buffers"][name]["images"]) == TRAINING.pool_size
        images = [torch.cat(r["state"]["buffers"][name]["images"]) for r in (two, one)]
        torch.testing.assert_close(images[0], images[1], rtol=0, atol=1e-3)
        assert two["state"]["buffers"][name]["rng"] == one["state"]["buffers"][name]["rng"]


@pytest.mark.slow
def test_only_rank_0_writes_the_run_folder(runs):
    names = sorted(p.name for p in (runs / "two").iterdir())
    assert names == sorted(p.name for p in (runs / "one").iterdir())
    assert "training.json" in names and not [n for n in names if n.startswith(".") or n.endswith(".tmp")]


@pytest.mark.slow
def test_a_killed_two_rank_run_resumes_to_the_same_checkpoint(runs, tmp_path):
    # rank 1 is killed (SIGKILL) in the middle of the second epoch; rank 0 loses its peer and stops too
    with pytest.raises(Exception):
        two_ranks(tmp_path, failure=(1, 2, 1, "kill"))
    assert last(tmp_path)["epoch"] == 1
    two_ranks(tmp_path)
    resumed, straight = last(tmp_path), last(runs / "two")
    assert resumed["epoch"] == EPOCHS
    for name, weights in straight["state"]["networks"].items():
        for key, value in weights.items():
            assert torch.equal(resumed["state"]["networks"][name][key], value), (name, key)
    for component in straight["best"]:
        assert resumed["best"][component] == straight["best"][component]


@pytest.mark.slow
def test_a_failing_rank_stops_the_other_with_a_clear_message(tmp_path, capfd):
    with pytest.raises(Exception):
        two_ranks(tmp_path, epochs=1, failure=(1, 1, 1, "raise"))
    err = capfd.readouterr().err
    assert "vstain: rank 1 of 2 failed: ValueError: a failure made on purpose at epoch 1, step 1" in err
    assert not (tmp_path / "last.pt").exists() and not (tmp_path / "training.json").exists()


# --------------------------------------------------------------------------- vstain train under torchrun


def two_rank_profile(folder):
    """The smoke profile with ``training.ranks: 2``, as a YAML file (its name stays smoke)."""
    text = (ROOT / "vstain" / "profiles" / "smoke.yaml").read_text()
    assert "  ranks: 1" in text
    path = folder / "smoke_two_ranks.yaml"
    path.write_text(text.replace("  ranks: 1", "  ranks: 2", 1))
    return path


def test_vstain_train_needs_as_many_processes_as_the_profiles_ranks(tmp_path, monkeypatch, capsys):
    _write_registered_dataset(tmp_path)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    arguments = ["train", "--model", "cyclegan", "--epochs", "1", "--results", str(tmp_path), "--profile"]
    assert main(arguments + [str(two_rank_profile(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "training.ranks is 2 but vstain train was not started by torchrun" in err
    assert "-m torch.distributed.run --standalone --nproc_per_node 2 -m vstain train" in err
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(arguments + ["smoke"]) == 2
    assert "training.ranks is 1 but vstain train was started by torchrun on 2 processes" in capsys.readouterr().err
    assert not (tmp_path / "smoke" / "models").exists()


@pytest.mark.slow
def test_vstain_train_under_torchrun_trains_one_run_on_two_ranks(tmp_path):
    _write_registered_dataset(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "vstain", "train", "--profile", str(two_rank_profile(tmp_path)), "--model", "pix2pix",
               "--epochs", "1", "--results", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "smoke" / "models" / "pix2pix" / "fold0"
    assert done.stdout.strip().splitlines() == [str(run)]  # rank 0 alone prints
    record = last(run)
    assert record["ranks"] == 2 and record["epoch"] == 1
    assert all(np.isfinite(v) for k, v in record["history"][0].items())
