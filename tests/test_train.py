"""Training: outputs, determinism, exact resumption, bad input, loading generators, the stage, CLI."""

import contextlib
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from vstain import losses
from vstain.cli import main
from vstain.config import load_profile
from vstain.layout import model_dir
from vstain.masks import apply_mask, background_fill
from vstain.metrics import psnr, raw_ct_as_rgb, ssim
from vstain.models.checkpoint import load_generator
from vstain.pairs import RegisteredPair, read_registered_pair, write_registered_pair
from vstain.stages import train as train_stage
from vstain.stages import upstream
from vstain.stages.train import ensure_trained, is_trained, train_fold
from vstain.train import (NonFiniteLossError, stain_pair, train_model, use_cpu_bf16, validation_medians,
                          validation_scores)

torch.set_num_threads(1)
SMOKE = load_profile("smoke")


def make_pair(pair_id="p0", shape=(48, 48), seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    bone = (yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 < (min(shape) / 3) ** 2
    ct = np.where(bone, 30000, 10000) + rng.normal(0, 500, shape)
    histology = np.where(bone[..., None], [60, 90, 200], [235, 230, 240]) + rng.normal(0, 5, shape + (3,))
    return RegisteredPair(pair_id, "Mg", "toluidine_blue", ct.astype(np.uint16),
                          np.clip(histology, 0, 255).astype(np.uint8), np.ones(shape, bool), 5.0)


PAIRS = [make_pair("a", seed=0), make_pair("b", seed=1)]


def train(profile, model, fold, *, pairs=PAIRS, epochs=None, out_dir):
    """One run of :func:`vstain.train.train_model` with the settings of ``profile``."""
    epochs = profile.training.epochs if epochs is None else epochs
    return train_model(pairs, out_dir, model, profile.training, epochs=epochs, seed=profile.seed, fold=fold,
                       profile_name=profile.name)


def weights(folder):
    return torch.load(folder / "last.pt", weights_only=True)["state"]["networks"]


def same_weights(a, b):
    return all(torch.equal(a[n][k], b[n][k]) for n in a for k in a[n])


@pytest.mark.parametrize("model", ["mod_cyclegan", "cyclegan", "cyclegan_invct", "pix2pix"])
def test_resume_from_last_equals_uninterrupted_run(tmp_path, model):
    straight = train(SMOKE, model, 0, pairs=PAIRS, epochs=2, out_dir=tmp_path / "straight")
    train(SMOKE, model, 0, pairs=PAIRS, epochs=1, out_dir=tmp_path / "resumed")
    assert torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["epoch"] == 1
    resumed = train(SMOKE, model, 0, pairs=PAIRS, epochs=2, out_dir=tmp_path / "resumed")
    assert same_weights(weights(straight), weights(resumed))
    a = pd.read_csv(straight / "history.csv").drop(columns="seconds")
    b = pd.read_csv(resumed / "history.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(a, b)


def test_outputs_history_checkpoints_and_loading(tmp_path):
    out = train(SMOKE, "mod_cyclegan", 0, pairs=PAIRS, epochs=2, out_dir=tmp_path)
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    for column in ["gan", "cyc", "id", "px", "gs", "total", "D_X", "D_Y", "seconds"]:
        assert column in history and np.isfinite(history[column]).all()
    for component in ["gan", "cyc", "id", "px", "gs", "total"]:
        checkpoint = torch.load(out / f"best_{component}.pt", weights_only=True)
        assert checkpoint["value"] == history[component].min()
        assert checkpoint["epoch"] == int(history.loc[history[component].idxmin(), "epoch"])
        assert checkpoint["provenance"]["profile"] == "smoke" and "vstain_version" in checkpoint["provenance"]
    assert not list(out.glob("*.part"))
    generator, info = load_generator(out / "best_px.pt")
    assert info["network"] == "G_XY" and info["model"] == "mod_cyclegan" and info["in_channels"] == 3
    assert not generator.training
    state = torch.load(out / "best_px.pt", weights_only=True)["generators"]["G_XY"]
    assert all(torch.equal(v, generator.state_dict()[k]) for k, v in state.items())
    backwards, info = load_generator(out / "last.pt", "histology_to_ct")
    assert info["network"] == "G_YX"
    x = torch.zeros(1, 3, 32, 32)
    assert backwards(x).shape == x.shape


def test_invct_and_pix2pix_checkpoint_info(tmp_path):
    out = train(SMOKE, "cyclegan_invct", 0, pairs=PAIRS, epochs=1, out_dir=tmp_path / "i")
    assert load_generator(out / "last.pt")[1]["invert_ct"] is True
    out = train(SMOKE, "pix2pix", 0, pairs=PAIRS, epochs=1, out_dir=tmp_path / "p")
    generator, info = load_generator(out / "best_l1.pt")
    assert type(generator).__name__ == "UnetGenerator" and info["invert_ct"] is False
    with pytest.raises(ValueError, match="no histology_to_ct generator"):
        load_generator(out / "last.pt", "histology_to_ct")
    with pytest.raises(ValueError, match="unknown direction"):
        load_generator(out / "last.pt", "sideways")
    with pytest.raises(FileNotFoundError):
        load_generator(out / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: not a readable checkpoint"):
        load_generator(tmp_path / "junk.pt")


def test_deterministic_and_seed_dependent(tmp_path):
    a = train(SMOKE, "pix2pix", 0, pairs=PAIRS, epochs=1, out_dir=tmp_path / "a")
    b = train(SMOKE, "pix2pix", 0, pairs=PAIRS, epochs=1, out_dir=tmp_path / "b")
    c = train(SMOKE, "pix2pix", 1, pairs=PAIRS, epochs=1, out_dir=tmp_path / "c")
    assert same_weights(weights(a), weights(b))
    assert not same_weights(weights(a), weights(c))


def test_global_random_state_untouched(tmp_path):
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    train(SMOKE, "pix2pix", 0, pairs=PAIRS, epochs=1, out_dir=tmp_path)
    assert torch.equal(torch.rand(3), expected)


def test_resume_refuses_checkpoint_of_another_model_or_shape(tmp_path):
    train(SMOKE, "cyclegan", 0, pairs=PAIRS, epochs=1, out_dir=tmp_path)
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(ValueError, match=r"last.pt: field model is 'cyclegan' .* but 'mod_cyclegan'"):
        train(SMOKE, "mod_cyclegan", 0, pairs=PAIRS, epochs=2, out_dir=tmp_path)
    wider = dataclasses.replace(SMOKE, training=dataclasses.replace(SMOKE.training, ngf=8))
    with pytest.raises(ValueError, match="field architecture.generator.ngf is 4"):
        train(wider, "cyclegan", 0, pairs=PAIRS, epochs=2, out_dir=tmp_path)
    with pytest.raises(ValueError, match="field pair_ids"):
        train(SMOKE, "cyclegan", 0, pairs=PAIRS[:1] * 2, epochs=2, out_dir=tmp_path)
    assert (tmp_path / "last.pt").read_bytes() == before


def test_nan_loss_stops_with_epoch_and_component(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = losses.greyscale_loss

    def nan_in_epoch_2(fake_x, mask=None):
        calls["n"] += 1
        value = real(fake_x, mask)
        return value * float("nan") if calls["n"] > 4 else value  # 2 pairs x 4 patches / batch 2: 4 steps per epoch

    monkeypatch.setattr(losses, "greyscale_loss", nan_in_epoch_2)
    with pytest.raises(NonFiniteLossError, match="loss component gs is nan at epoch 2, step 0"):
        train(SMOKE, "mod_cyclegan", 0, pairs=PAIRS, epochs=3, out_dir=tmp_path / "late")
    kept = torch.load(tmp_path / "late" / "last.pt", weights_only=True)
    assert kept["epoch"] == 1  # epoch 1's checkpoint, nothing of epoch 2
    assert len(pd.read_csv(tmp_path / "late" / "history.csv")) == 1
    assert not list((tmp_path / "late").glob("*.part"))
    calls["n"] = 4
    with pytest.raises(NonFiniteLossError, match="epoch 1"):
        train(SMOKE, "mod_cyclegan", 0, pairs=PAIRS, epochs=1, out_dir=tmp_path / "early")
    assert not (tmp_path / "early").exists()  # nothing is written before the first epoch ends


def test_bad_pairs_leave_nothing_behind(tmp_path):
    bad = make_pair("bad")
    bad.mask = np.zeros_like(bad.mask)
    with pytest.raises(ValueError, match="pair bad: field mask is all zero"):
        train(SMOKE, "cyclegan", 0, pairs=[bad], out_dir=tmp_path / "run")
    small = make_pair("small", shape=(20, 20))
    with pytest.raises(ValueError, match="pair small: image shape"):
        train(SMOKE, "cyclegan", 0, pairs=[small], out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="unknown model 'cycle'"):
        train(SMOKE, "cycle", 0, pairs=PAIRS, out_dir=tmp_path / "run")


def _registered(root, pair_id):
    from_disk = root / "smoke" / "registered" / pair_id
    return read_registered_pair(from_disk)


def _write_registered_dataset(root):
    """Registered pairs and a split on disk, as the earlier stages write them."""
    registered = root / "smoke" / "registered"
    for index in range(4):
        write_registered_pair(registered / f"p{index}", make_pair(f"p{index}", seed=index))
    split = pd.DataFrame({"pair_id": [f"p{i}" for i in range(4)], "stain": "toluidine_blue", "material": "Mg",
                          "fold0": ["train", "train", "validation", "test"],
                          "fold1": ["validation", "train", "train", "test"]})
    (root / "smoke" / "dataset").mkdir(parents=True)
    split.to_csv(root / "smoke" / "dataset" / "split.csv", index=False)


def test_ensure_trained_reads_registered_pairs_and_is_idempotent(tmp_path):
    _write_registered_dataset(tmp_path)
    assert not is_trained(SMOKE, "pix2pix", 0, root=tmp_path)
    out = ensure_trained(SMOKE, "pix2pix", 0, progress=False, root=tmp_path)
    assert out == model_dir("smoke", "pix2pix", 0, root=tmp_path)
    assert torch.load(out / "last.pt", weights_only=True)["pair_ids"] == ["p0", "p1"]
    assert is_trained(SMOKE, "pix2pix", 0, root=tmp_path)
    stamp = (out / "last.pt").stat().st_mtime_ns
    ensure_trained(SMOKE, "pix2pix", 0, progress=False, root=tmp_path)
    assert (out / "last.pt").stat().st_mtime_ns == stamp


def test_train_fold_takes_the_profile_epochs_seed_and_fold_pairs(tmp_path):
    _write_registered_dataset(tmp_path)
    out = train_fold(SMOKE, "cyclegan", 1, progress=False, root=tmp_path)
    assert out == model_dir("smoke", "cyclegan", 1, root=tmp_path)
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["epoch"] == SMOKE.training.epochs and last["pair_ids"] == ["p1", "p2"]
    assert last["provenance"]["profile"] == "smoke" and last["provenance"]["seed"] == SMOKE.seed
    # the stage is the science run with the profile's numbers: the same weights
    same = train(SMOKE, "cyclegan", 1, pairs=[_registered(tmp_path, "p1"), _registered(tmp_path, "p2")],
                 out_dir=tmp_path / "science")
    assert same_weights(weights(out), weights(same))
    with pytest.raises(ValueError, match="unknown stain 'eosin'"):
        train_fold(SMOKE, "cyclegan", 1, stain="eosin", root=tmp_path)


def test_cli_trains_and_reports_bad_input(tmp_path, capsys):
    _write_registered_dataset(tmp_path)
    code = main(["train", "--profile", "smoke", "--model", "cyclegan", "--fold", "1", "--epochs", "1",
                 "--results", str(tmp_path)])
    assert code == 0
    assert (model_dir("smoke", "cyclegan", 1, root=tmp_path) / "last.pt").is_file()
    assert main(["train", "--profile", "smoke", "--model", "pix2pix", "--fold", "0",
                 "--results", str(tmp_path / "empty")]) == 2
    assert "split.csv" in capsys.readouterr().err


def test_cpu_bf16_and_channels_last_variants_train(tmp_path):
    assert use_cpu_bf16("on") and not use_cpu_bf16("off")
    with pytest.raises(ValueError, match="cpu_bf16"):
        use_cpu_bf16("maybe")
    fast = dataclasses.replace(SMOKE, training=dataclasses.replace(SMOKE.training, cpu_bf16="on",
                                                                   channels_last=True))
    plain = dataclasses.replace(SMOKE, training=dataclasses.replace(SMOKE.training, cpu_bf16="off",
                                                                    channels_last=False))
    a = train(fast, "mod_cyclegan", 0, pairs=PAIRS, epochs=1, out_dir=tmp_path / "fast")
    b = train(plain, "mod_cyclegan", 0, pairs=PAIRS, epochs=1, out_dir=tmp_path / "plain")
    ha, hb = pd.read_csv(a / "history.csv"), pd.read_csv(b / "history.csv")
    assert np.isfinite(ha.drop(columns="seconds").to_numpy()).all()
    # bf16 changes the numbers a little, not the training
    assert abs(ha["total"][0] - hb["total"][0]) < 0.1 * hb["total"][0]
    generator, _ = load_generator(a / "last.pt")
    assert generator(torch.zeros(1, 3, 32, 32)).dtype == torch.float32


def test_validation_scores_are_the_masked_scores_on_the_mask_box(tmp_path):
    out = train(SMOKE, "pix2pix", 0, epochs=1, out_dir=tmp_path)
    pair = make_pair("v", seed=3)
    pair.mask = np.zeros_like(pair.mask)
    pair.mask[8:40, 4:44] = True
    scores = validation_scores(out / "last.pt", [pair], patch_size=32, step=16)
    assert scores.columns.tolist() == ["pair_id", "material", "ssim", "psnr", "ssim_baseline", "psnr_baseline"]
    generated = stain_pair(out / "last.pt", pair, 32, 16)
    box = np.s_[8:40, 4:44]
    fill = background_fill(pair.histology, pair.mask)
    real = apply_mask(pair.histology, pair.mask, fill)[box]
    row = scores.iloc[0]
    assert row.pair_id == "v" and row.ssim == ssim(real, generated[box]) and row.psnr == psnr(real, generated[box])
    assert row.ssim_baseline == ssim(real, raw_ct_as_rgb(pair.ct)[box])
    # what lies outside the mask does not count
    changed = dataclasses.replace(pair, histology=pair.histology.copy())
    changed.histology[~pair.mask] = 0
    changed_scores = validation_scores(out / "last.pt", [changed], patch_size=32, step=16)
    assert changed_scores[["ssim", "psnr", "ssim_baseline"]].equals(scores[["ssim", "psnr", "ssim_baseline"]])


def test_training_report_trains_then_reads_history_patches_and_scores(tmp_path, monkeypatch):
    monkeypatch.setenv("VSTAIN_RESULTS", str(tmp_path))
    _write_registered_dataset(tmp_path)  # the registered pairs the stage reads (it registers nothing itself)
    validation = [_registered(tmp_path, "p2")]
    report = train_stage.training_report(SMOKE, "pix2pix", 0, validation, n_patches=2, progress=False)
    assert report.run == model_dir("smoke", "pix2pix", 0, root=tmp_path)
    assert report.history["epoch"].tolist() == list(range(1, SMOKE.training.epochs + 1))
    assert report.panels["real_histology"].shape == (2, 32, 32, 3) and "generated_ct" not in report.panels
    assert report.scores.pair_id.tolist() == ["p2"]
    medians = validation_medians({"pix2pix": report.scores})
    assert medians.loc["pix2pix", "ssim"] == report.scores.ssim.iloc[0]


def test_a_split_of_another_fold_count_is_refused_before_training(tmp_path, capsys):
    _write_registered_dataset(tmp_path)  # 2 folds, as smoke's dataset.n_folds
    three = dataclasses.replace(SMOKE, dataset=dataclasses.replace(SMOKE.dataset, n_folds=3))
    with pytest.raises(ValueError, match=r"split\.csv: the split has 2 folds but profile smoke sets "
                                         r"dataset\.n_folds 3; rewrite it with vstain check-manifest"):
        train_fold(three, "pix2pix", 0, epochs=1, progress=False, root=tmp_path)
    assert not model_dir("smoke", "pix2pix", 0, root=tmp_path).exists()


#: Files opened while a test watches (:func:`opened_files`); None: nobody watches.
_OPENED: list[str] | None = None


def _record_opens(event, args):
    if event == "open" and _OPENED is not None and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_record_opens)  # the interpreter's own "open" events: whichever module opens a file, it is seen


@contextlib.contextmanager
def opened_files():
    """The paths of every file opened inside the ``with`` block (by any module, through ``open``)."""
    global _OPENED
    _OPENED = []
    try:
        yield _OPENED
    finally:
        _OPENED = None


def test_training_a_fold_reads_the_split_once(tmp_path):
    _write_registered_dataset(tmp_path)
    with opened_files() as opened:
        out = train_fold(SMOKE, "pix2pix", 0, epochs=1, progress=False, root=tmp_path)
    split = (tmp_path / "smoke" / "dataset" / "split.csv").resolve()
    assert [Path(path).resolve() for path in opened if path.endswith("split.csv")] == [split]
    assert torch.load(out / "last.pt", weights_only=True)["pair_ids"] == ["p0", "p1"]
    # the profile's inference settings go with the weights (`vstain stain` tiles with them)
    import dataclasses

    assert torch.load(out / "last.pt", weights_only=True)["inference"] == dataclasses.asdict(SMOKE.inference)


def test_checkpoint_records_the_training_ct_statistics_inside_the_masks(tmp_path):
    out = train(SMOKE, "pix2pix", 0, epochs=1, out_dir=tmp_path)
    stats = torch.load(out / "last.pt", weights_only=True)["ct_statistics"]
    inside = np.concatenate([p.ct[p.mask] for p in PAIRS]).astype(float)
    assert stats["levels"][3] == 0.5 and stats["n_values"] == min(inside.size, 200_000)
    assert stats["quantiles"] == sorted(stats["quantiles"])
    assert abs(stats["quantiles"][3] - np.median(inside)) < 0.02 * (inside.max() - inside.min())
    assert load_generator(out / "last.pt")[1]["ct_statistics"] == stats
    # and the voxel size it was trained at, which `vstain stain` compares a volume's with
    recorded = torch.load(out / "last.pt", weights_only=True)["ct_voxel_um"]
    assert recorded == float(np.median([p.pixel_size_um for p in PAIRS])) > 0
    assert load_generator(out / "last.pt")[1]["ct_voxel_um"] == recorded


def test_checkpoint_selection_picks_the_best_validation_checkpoint_and_never_reads_test_pairs(tmp_path, monkeypatch):
    from vstain.train import run_checkpoints, select_checkpoint

    _write_registered_dataset(tmp_path)  # fold 0: p0, p1 train; p2 validation; p3 test
    profile = dataclasses.replace(SMOKE, training=dataclasses.replace(SMOKE.training, epochs=3))
    read = []
    original = upstream.load_fold_pairs

    def watched(profile_name, fold, role="train", stain="toluidine_blue", root=None):
        pairs = original(profile_name, fold, role, stain, root)
        read.extend((role, p.pair_id) for p in pairs)
        return pairs

    monkeypatch.setattr(upstream, "load_fold_pairs", watched)  # where every stage reads the fold's pairs
    chosen_path = train_stage.ensure_selected(profile, "pix2pix", 0, progress=False, root=tmp_path)
    run = model_dir("smoke", "pix2pix", 0, root=tmp_path)
    candidates = run_checkpoints(run)
    assert "last" in candidates and len(candidates) > 1  # the loss minima are candidates too
    assert ("test", "p3") not in read and all(pid != "p3" for _, pid in read)
    validation = [read_registered_pair(tmp_path / "smoke" / "registered" / "p2")]
    medians = {name: validation_scores_median(path, validation) for name, path in candidates.items()}
    best = max(medians.values())
    assert medians[chosen_path.stem] == best
    chosen, table = train_stage.selection_table(profile, "pix2pix", 0, root=tmp_path)
    assert chosen == chosen_path.stem and sorted(table["candidate"]) == sorted(candidates)
    assert table.set_index("candidate")["median_ssim"].to_dict() == pytest.approx(medians)
    # up to date: read back, not recomputed
    monkeypatch.setattr(upstream, "select_checkpoint", lambda *a, **k: pytest.fail("recomputed"))
    assert train_stage.ensure_selected(profile, "pix2pix", 0, progress=False, root=tmp_path) == chosen_path
    assert select_checkpoint(candidates, [], "last", 32, 16)[0] == "last"
    with pytest.raises(ValueError, match="needs validation pairs"):
        select_checkpoint(candidates, [], "validation_ssim", 32, 16)


def validation_scores_median(path, pairs):
    from vstain.train import validation_scores

    return float(validation_scores(path, pairs, SMOKE.inference.patch_size, SMOKE.inference.step)["ssim"].median())


def test_learning_rate_decays_linearly_from_the_given_epoch_and_resumes_on_schedule(tmp_path):
    from vstain.train import learning_rate_factor

    decaying = dataclasses.replace(SMOKE.training, lr_decay_start_epoch=1)
    out = train_model(PAIRS, tmp_path / "a", "pix2pix", decaying, epochs=3, seed=SMOKE.seed, progress=False)
    state = torch.load(out / "last.pt", weights_only=True)["state"]["optimisers"]["G"]
    assert state["param_groups"][0]["lr"] == pytest.approx(SMOKE.training.lr * learning_rate_factor(3, 3, 1))
    assert learning_rate_factor(3, 3, 1) == pytest.approx(0.5)
    # stopped after 2 epochs and resumed: the same weights as the uninterrupted run
    train_model(PAIRS, tmp_path / "b", "pix2pix", decaying, epochs=2, seed=SMOKE.seed, progress=False)
    resumed = train_model(PAIRS, tmp_path / "b", "pix2pix", decaying, epochs=3, seed=SMOKE.seed, progress=False)
    for name, tensor in weights(out)["G_XY"].items():
        assert torch.equal(tensor, weights(resumed)["G_XY"][name]), name


def test_prefetching_batches_changes_nothing(tmp_path):
    ahead = dataclasses.replace(SMOKE.training, prefetch_batches=3)
    a = train_model(PAIRS, tmp_path / "a", "mod_cyclegan", SMOKE.training, epochs=1, seed=SMOKE.seed, progress=False)
    b = train_model(PAIRS, tmp_path / "b", "mod_cyclegan", ahead, epochs=1, seed=SMOKE.seed, progress=False)
    for net, state in weights(a).items():
        for name, tensor in state.items():
            assert torch.equal(tensor, weights(b)[net][name]), (net, name)


def test_prefetch_hands_on_a_sampling_error():
    from vstain.train import prefetched

    def failing():
        yield {"i": 0}
        raise ValueError("pair p3: patch larger than the pair")

    got = []
    with pytest.raises(ValueError, match="patch larger"):
        for batch in prefetched(failing(), 2):
            got.append(batch["i"])
    assert got == [0]


def test_cuda_precision_is_checked_and_means_nothing_on_the_cpu():
    from vstain.train import Trainer

    trainer = Trainer("pix2pix", SMOKE.training, 0, "cpu", cuda_precision="fp16")
    assert trainer.scaler is None and trainer.cuda_dtype is None
    with pytest.raises(ValueError, match="training.cuda_precision must be one of"):
        Trainer("pix2pix", SMOKE.training, 0, "cpu", cuda_precision="int8")


# --------------------------------------------------------------------------- CUDA paths, by their selection logic
# No GPU runs these tests: the choices the CUDA paths depend on are checked on the CPU.


@pytest.mark.parametrize("precision, device, dtype, scaler", [
    ("fp32", "cuda", None, False), ("bf16", "cuda", torch.bfloat16, False), ("fp16", "cuda", torch.float16, True),
    ("fp32", "cpu", None, False), ("bf16", "cpu", None, False), ("fp16", "cpu", None, False),
])
def test_cuda_precision_plan_scales_the_loss_for_fp16_on_cuda_only(precision, device, dtype, scaler):
    from vstain.train import cuda_precision_plan

    assert cuda_precision_plan(precision, device) == (dtype, scaler)


def test_cuda_precision_plan_refuses_an_unknown_precision_on_any_device():
    from vstain.train import cuda_precision_plan

    for device in ("cuda", "cpu"):
        with pytest.raises(ValueError, match=r"training\.cuda_precision must be one of \['fp32', 'bf16', 'fp16'\]"):
            cuda_precision_plan("fp8", device)


def _one_batch():
    from vstain.data import PatchSampler

    sampler = PatchSampler.from_profile(PAIRS, SMOKE.training, 0, invert_ct=False)
    return next(iter(sampler.epoch(1)))


@pytest.mark.parametrize("model", ["pix2pix", "mod_cyclegan"])
def test_the_gradient_scaler_path_updates_like_the_unscaled_one_and_skips_overflows(model):
    """The fp16 path's loss scaling (scale, unscale in step, update), run on the CPU's GradScaler."""
    from vstain.train import Trainer

    batch = _one_batch()
    plain = Trainer(model, SMOKE.training, 0, "cpu")
    scaled = Trainer(model, SMOKE.training, 0, "cpu")
    scaled.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    torch.manual_seed(0)
    plain.step(batch)
    torch.manual_seed(0)
    scaled.step(batch)
    for name in plain.nets:
        for (key, a), b in zip(plain.nets[name].state_dict().items(), scaled.nets[name].state_dict().values()):
            assert torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-5), f"{name}.{key}"
    assert scaled.scaler.get_scale() == 2.0 ** 10  # no overflow: the scale stays until the growth interval
    assert scaled.state_dict()["scaler"]["scale"] == 2.0 ** 10

    overflowing = Trainer(model, SMOKE.training, 0, "cpu")
    overflowing.scaler = torch.amp.GradScaler("cpu", init_scale=3.0e38)
    before = {name: {k: v.clone() for k, v in net.state_dict().items()} for name, net in overflowing.nets.items()}
    overflowing.step(batch)
    generator = next(name for name in overflowing.nets if name.startswith("G"))
    assert all(torch.equal(before[generator][k], v) for k, v in overflowing.nets[generator].state_dict().items()
               if v.is_floating_point() and "running" not in k), "an overflowing step must be skipped"
    assert overflowing.scaler.get_scale() < 3.0e38


def test_prefetch_pins_every_tensor_only_when_asked(monkeypatch):
    from vstain.train import prefetched

    pinned = []

    def fake_pin(tensor):  # Tensor.pin_memory needs CUDA; record the call instead
        pinned.append(tuple(tensor.shape))
        return tensor.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    batches = [{"x": torch.zeros(2, 3), "mask": torch.ones(2), "pair_id": "a"} for _ in range(3)]
    assert [b["pair_id"] for b in prefetched(iter(batches), 2)] == ["a"] * 3 and pinned == []
    out = list(prefetched(iter(batches), 2, pin_memory=True))
    assert pinned == [(2, 3), (2,)] * 3 and all(b["pair_id"] == "a" for b in out)


def test_training_on_the_cpu_prefetches_without_pinning(tmp_path, monkeypatch):
    import vstain.train as train_module

    calls = []
    original = train_module.prefetched

    def recording(batches, depth, *, pin_memory=False):
        calls.append((depth, pin_memory))
        return original(batches, depth, pin_memory=pin_memory)

    monkeypatch.setattr(train_module, "prefetched", recording)
    ahead = dataclasses.replace(SMOKE.training, prefetch_batches=2)
    train_model(PAIRS, tmp_path, "pix2pix", ahead, epochs=1, seed=SMOKE.seed, fold=0, profile_name="smoke")
    assert calls == [(2, False)]


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                              ("fp16", torch.float16)])
def test_inference_dtype_follows_the_profile_on_cuda_and_is_fp32_on_the_cpu(precision, dtype):
    from vstain.stages.infer import inference_dtype

    profile = dataclasses.replace(SMOKE, inference=dataclasses.replace(SMOKE.inference, cuda_precision=precision))
    assert inference_dtype(profile, "cuda") == dtype
    assert inference_dtype(profile, "cuda:1") == dtype
    assert inference_dtype(profile, "cpu") == torch.float32


def test_train_fold_hands_its_run_setup_to_the_training(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(train_stage, "train_model", lambda pairs, out, model, cfg, **kw: seen.update(kw) or out)
    setup = train_stage.RunSetup(resume=False, device="cpu")
    out = train_fold(SMOKE, "pix2pix", 0, epochs=1, pairs=PAIRS, out_dir=tmp_path / "run", setup=setup)
    assert out == tmp_path / "run"
    assert (seen["resume"], str(seen["device"]), seen["ranks"], seen["epochs"]) == (False, "cpu", None, 1)
    train_fold(SMOKE, "pix2pix", 0, epochs=1, pairs=PAIRS, out_dir=tmp_path / "run")  # the default: resume
    assert seen["resume"] is True
