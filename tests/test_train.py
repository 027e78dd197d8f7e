"""Training: outputs, determinism, exact resumption, bad input, loading generators, CLI."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from vstain import losses
from vstain.config import load_profile
from vstain.pairs import RegisteredPair, write_registered_pair
from vstain.train import (NonFiniteLossError, ensure_trained, is_trained, load_generator, model_dir, train_model)

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


def weights(folder):
    return torch.load(folder / "last.pt", weights_only=True)["state"]["networks"]


def same_weights(a, b):
    return all(torch.equal(a[n][k], b[n][k]) for n in a for k in a[n])


@pytest.mark.parametrize("model", ["mod_cyclegan", "cyclegan", "cyclegan_invct", "pix2pix"])
def test_resume_from_last_equals_uninterrupted_run(tmp_path, model):
    straight = train_model(SMOKE, model, 0, pairs=PAIRS, epochs=2, out_dir=tmp_path / "straight", progress=False)
    train_model(SMOKE, model, 0, pairs=PAIRS, epochs=1, out_dir=tmp_path / "resumed", progress=False)
    assert torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["epoch"] == 1
    resumed = train_model(SMOKE, model, 0, pairs=PAIRS, epochs=2, out_dir=tmp_path / "resumed", progress=False)
    assert same_weights(weights(straight), weights(resumed))
    a = pd.read_csv(straight / "history.csv").drop(columns="seconds")
    b = pd.read_csv(resumed / "history.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(a, b)


def test_outputs_history_checkpoints_and_loading(tmp_path):
    out = train_model(SMOKE, "mod_cyclegan", 0, pairs=PAIRS, epochs=2, out_dir=tmp_path, progress=False)
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
    out = train_model(SMOKE, "cyclegan_invct", 0, pairs=PAIRS, epochs=1, out_dir=tmp_path / "i", progress=False)
    assert load_generator(out / "last.pt")[1]["invert_ct"] is True
    out = train_model(SMOKE, "pix2pix", 0, pairs=PAIRS, epochs=1, out_dir=tmp_path / "p", progress=False)
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
    a = train_model(SMOKE, "pix2pix", 0, pairs=PAIRS, epochs=1, out_dir=tmp_path / "a", progress=False)
    b = train_model(SMOKE, "pix2pix", 0, pairs=PAIRS, epochs=1, out_dir=tmp_path / "b", progress=False)
    c = train_model(SMOKE, "pix2pix", 1, pairs=PAIRS, epochs=1, out_dir=tmp_path / "c", progress=False)
    assert same_weights(weights(a), weights(b))
    assert not same_weights(weights(a), weights(c))


def test_global_random_state_untouched(tmp_path):
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    train_model(SMOKE, "pix2pix", 0, pairs=PAIRS, epochs=1, out_dir=tmp_path, progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_resume_refuses_checkpoint_of_another_model_or_shape(tmp_path):
    train_model(SMOKE, "cyclegan", 0, pairs=PAIRS, epochs=1, out_dir=tmp_path, progress=False)
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(ValueError, match=r"last.pt: field model is 'cyclegan' .* but 'mod_cyclegan'"):
        train_model(SMOKE, "mod_cyclegan", 0, pairs=PAIRS, epochs=2, out_dir=tmp_path, progress=False)
    wider = dataclasses.replace(SMOKE, training=dataclasses.replace(SMOKE.training, ngf=8))
    with pytest.raises(ValueError, match="field architecture.generator.ngf is 4"):
        train_model(wider, "cyclegan", 0, pairs=PAIRS, epochs=2, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="field pair_ids"):
        train_model(SMOKE, "cyclegan", 0, pairs=PAIRS[:1] * 2, epochs=2, out_dir=tmp_path, progress=False)
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
        train_model(SMOKE, "mod_cyclegan", 0, pairs=PAIRS, epochs=3, out_dir=tmp_path / "late", progress=False)
    kept = torch.load(tmp_path / "late" / "last.pt", weights_only=True)
    assert kept["epoch"] == 1  # epoch 1's checkpoint, nothing of epoch 2
    assert len(pd.read_csv(tmp_path / "late" / "history.csv")) == 1
    assert not list((tmp_path / "late").glob("*.part"))
    calls["n"] = 4
    with pytest.raises(NonFiniteLossError, match="epoch 1"):
        train_model(SMOKE, "mod_cyclegan", 0, pairs=PAIRS, epochs=1, out_dir=tmp_path / "early", progress=False)
    assert not list((tmp_path / "early").glob("*.pt")) if (tmp_path / "early").exists() else True


def test_bad_pairs_leave_nothing_behind(tmp_path):
    bad = make_pair("bad")
    bad.mask = np.zeros_like(bad.mask)
    with pytest.raises(ValueError, match="pair bad: field mask is all zero"):
        train_model(SMOKE, "cyclegan", 0, pairs=[bad], out_dir=tmp_path / "run", progress=False)
    small = make_pair("small", shape=(20, 20))
    with pytest.raises(ValueError, match="pair small: image shape"):
        train_model(SMOKE, "cyclegan", 0, pairs=[small], out_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="unknown model 'cycle'"):
        train_model(SMOKE, "cycle", 0, pairs=PAIRS, out_dir=tmp_path / "run", progress=False)


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


def test_cli_trains_and_reports_bad_input(tmp_path, capsys):
    from vstain.cli import main

    _write_registered_dataset(tmp_path)
    code = main(["train", "--profile", "smoke", "--model", "cyclegan", "--fold", "1", "--epochs", "1",
                 "--results", str(tmp_path)])
    assert code == 0
    assert (model_dir("smoke", "cyclegan", 1, root=tmp_path) / "last.pt").is_file()
    assert main(["train", "--profile", "smoke", "--model", "pix2pix", "--fold", "0",
                 "--results", str(tmp_path / "empty")]) == 2
    assert "split.csv" in capsys.readouterr().err


def test_cpu_bf16_and_channels_last_variants_train(tmp_path):
    from vstain.train import use_cpu_bf16

    assert use_cpu_bf16("on") and not use_cpu_bf16("off")
    with pytest.raises(ValueError, match="cpu_bf16"):
        use_cpu_bf16("maybe")
    fast = dataclasses.replace(SMOKE, training=dataclasses.replace(SMOKE.training, cpu_bf16="on",
                                                                   channels_last=True))
    plain = dataclasses.replace(SMOKE, training=dataclasses.replace(SMOKE.training, cpu_bf16="off",
                                                                    channels_last=False))
    a = train_model(fast, "mod_cyclegan", 0, pairs=PAIRS, epochs=1, out_dir=tmp_path / "fast", progress=False)
    b = train_model(plain, "mod_cyclegan", 0, pairs=PAIRS, epochs=1, out_dir=tmp_path / "plain", progress=False)
    ha, hb = pd.read_csv(a / "history.csv"), pd.read_csv(b / "history.csv")
    assert np.isfinite(ha.drop(columns="seconds").to_numpy()).all()
    # bf16 changes the numbers a little, not the training
    assert abs(ha["total"][0] - hb["total"][0]) < 0.1 * hb["total"][0]
    generator, _ = load_generator(a / "last.pt")
    assert generator(torch.zeros(1, 3, 32, 32)).dtype == torch.float32
