"""Training of the four models (paper 2.6), resumable and deterministic on CPU.

One run trains one model on one fold's training pairs and writes, atomically, under
``results/<profile>/models/<model>/fold<k>/`` (H&E: ``results/<profile>/he/models/<model>/``)::

    history.csv           one row per epoch: every generator loss component, the total,
                          the discriminator losses, seconds
    best_<component>.pt   the generators at the epoch minimum of each generator loss
                          component (paper 2.6.3), e.g. best_px.pt, best_total.pt
    last.pt               the generators, discriminators, optimisers, image buffers and
                          random states after the last finished epoch: resuming from it
                          gives the same weights as an uninterrupted run (CPU)
    training.json         summary written when the run has reached its epochs

Every checkpoint records the model name, the architecture hyper-parameters, which
generator maps which direction (``G_XY``: CT to histology), the profile, seed and code
version, so :func:`load_generator` rebuilds a network from the file alone.

Examples
--------
>>> import numpy as np, tempfile
>>> from vstain.config import load_profile
>>> from vstain.pairs import RegisteredPair
>>> rng = np.random.default_rng(0)
>>> pair = RegisteredPair("p0", "Mg", "toluidine_blue", rng.integers(0, 60000, (40, 40)).astype(np.uint16),
...                       rng.integers(0, 255, (40, 40, 3)).astype(np.uint8), np.ones((40, 40), bool), 5.0)
>>> out = train_model("smoke", "cyclegan", 0, pairs=[pair], epochs=1, out_dir=tempfile.mkdtemp(), progress=False)
>>> generator, info = load_generator(out / "last.pt")
>>> info["model"], info["direction"], info["network"]
('cyclegan', 'ct_to_histology', 'G_XY')
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import time
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm  # plain text bars: the same in a terminal, a log and a notebook

from vstain import losses
from vstain.config import Profile, load_profile
from vstain.data import PatchSampler
from vstain.io import atomic_path, provenance, write_csv, write_json
from vstain.layout import stage_dir
from vstain.models import MODEL_NAMES, architecture, build_discriminator, build_generator, build_networks
from vstain.models import loss_weights, model_spec
from vstain.pairs import RegisteredPair, read_registered_pair

CHECKPOINT_FORMAT = "vstain-checkpoint-1"
STAINS = ("toluidine_blue", "he")
DIRECTIONS = {"ct_to_histology": "G_XY", "histology_to_ct": "G_YX"}


class NonFiniteLossError(ValueError):
    """A loss became NaN or infinite; the message names the epoch, step and component."""


# --------------------------------------------------------------------------- small helpers


def _profile(profile: Profile | str) -> Profile:
    return profile if isinstance(profile, Profile) else load_profile(profile)


def _check_stain(stain: str) -> str:
    if stain not in STAINS:
        raise ValueError(f"unknown stain {stain!r}; valid stains: {', '.join(STAINS)}")
    return stain


def model_dir(profile_name: str, model: str, fold: int, stain: str = "toluidine_blue",
              root: str | Path | None = None) -> Path:
    """``results/<profile>/models/<model>/fold<k>/``; H&E: ``results/<profile>/he/models/<model>/`` (S2).

    The H&E study (``vstain.he_study``) has one split; other H&E folds get a ``fold<k>``
    sub-folder.

    Examples
    --------
    >>> model_dir("quick", "pix2pix", 2, root="results").as_posix()
    'results/quick/models/pix2pix/fold2'
    >>> model_dir("quick", "pix2pix", 0, "he", root="results").as_posix()
    'results/quick/he/models/pix2pix'
    """
    model_spec(model)
    if _check_stain(stain) == "he":
        base = stage_dir(profile_name, "he", root) / "models" / model
        return base if int(fold) == 0 else base / f"fold{int(fold)}"
    return stage_dir(profile_name, "models", root) / model / f"fold{int(fold)}"


def run_seed(seed: int, model: str, fold: int, stain: str = "toluidine_blue") -> int:
    """The seed of one run, derived from the profile seed, the model, the fold and the stain.

    Examples
    --------
    >>> run_seed(2025, "pix2pix", 0) == run_seed(2025, "pix2pix", 0) != run_seed(2025, "pix2pix", 1)
    True
    """
    sequence = np.random.SeedSequence([int(seed), int(fold), zlib.crc32(model.encode()), zlib.crc32(stain.encode())])
    return int(sequence.generate_state(1, np.uint32)[0])


def _epochs_for(profile: Profile, stain: str) -> int:
    return profile.he.epochs if stain == "he" else profile.training.epochs


def _device(profile: Profile, device: str | None) -> torch.device:
    wanted = device or profile.device
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"profile {profile.name}: field device is 'cuda' but no CUDA device is available")
    return torch.device(wanted)


@contextlib.contextmanager
def _threads(count: int):
    """Use ``count`` CPU threads inside the block (0: leave torch's default)."""
    before = torch.get_num_threads()
    if count > 0:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), read from ``/proc/cpuinfo`` (Linux)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_cpu_bf16(setting: str) -> bool:
    """Resolve ``profile.training.cpu_bf16`` (``off``, ``on``, ``auto``) on this machine.

    Without native bf16 the autocast is emulated and slower than fp32, hence ``auto``.

    Examples
    --------
    >>> use_cpu_bf16("off"), use_cpu_bf16("on")
    (False, True)
    """
    if setting not in ("off", "on", "auto"):
        raise ValueError(f"training.cpu_bf16 must be off, on or auto, got {setting!r}")
    return setting == "on" or (setting == "auto" and cpu_has_native_bf16())


def _save(obj: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _load(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ValueError(f"{path}: not a readable checkpoint ({err})") from err
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: field format is not {CHECKPOINT_FORMAT!r} (not a vstain checkpoint)")
    return checkpoint


def _compare(expected: Any, found: Any, where: str, path: Path) -> None:
    """Raise a ValueError naming the first differing field of two nested records."""
    if isinstance(expected, dict) and isinstance(found, dict):
        for key in list(expected) + [k for k in found if k not in expected]:
            _compare(expected.get(key), found.get(key), f"{where}.{key}" if where else key, path)
    elif expected != found:
        raise ValueError(f"{path}: field {where} is {found!r} in the checkpoint but {expected!r} for this run "
                         "(a checkpoint of another model or shape; delete it or pass resume=False)")


# --------------------------------------------------------------------------- training pairs


def load_training_pairs(profile: Profile | str, fold: int, role: str = "train", stain: str = "toluidine_blue",
                        root: str | Path | None = None) -> list[RegisteredPair]:
    """The registered pairs of one fold and role, read from ``results/<profile>/registered/``.

    The split is ``results/<profile>/dataset/split.csv`` (``vstain.manifest.read_split``).
    """
    from vstain.manifest import pairs_in_role, read_split

    profile = _profile(profile)
    split_path = stage_dir(profile.name, "dataset", root) / "split.csv"
    if not split_path.is_file():
        raise FileNotFoundError(f"{split_path}: split not found; generate the dataset first "
                                f"(vstain phantom --profile {profile.name})")
    ids = pairs_in_role(read_split(split_path), fold, role, stain=_check_stain(stain))
    if not ids:
        raise ValueError(f"{split_path}: no {stain} pairs with role {role!r} in fold {fold}")
    registered = stage_dir(profile.name, "registered", root)
    missing = [pid for pid in ids if not (registered / pid / "pair.json").is_file()]
    if missing:
        raise FileNotFoundError(f"{registered / missing[0] / 'pair.json'}: registered pair missing "
                                f"({len(missing)} of {len(ids)}); run vstain register --profile {profile.name}")
    return [read_registered_pair(registered / pid) for pid in ids]


def ground_truth_pairs(profile: Profile | str, fold: int, role: str = "train", stain: str = "toluidine_blue",
                       root: str | Path | None = None) -> list[RegisteredPair]:
    """The same pairs as :func:`load_training_pairs`, but registered by the phantom's ground truth.

    What a perfect registration would give (``vstain.phantom.ground_truth_pair``): an
    upper bound for teaching, and a way to train before the registration stage has run.
    """
    from vstain.manifest import pairs_in_role, read_split
    from vstain.phantom import ensure_dataset, ground_truth_pair, load_sample

    profile = _profile(profile)
    ensure_dataset(profile)
    dataset = stage_dir(profile.name, "dataset", root)
    ids = pairs_in_role(read_split(dataset / "split.csv"), fold, role, stain=_check_stain(stain))
    return [ground_truth_pair(load_sample(dataset / pid)) for pid in ids]


# --------------------------------------------------------------------------- one training step


def _finite(components: dict[str, torch.Tensor], epoch: int, step: int, model: str) -> None:
    values = torch.stack([v.detach().float() for v in components.values()])
    if not bool(torch.isfinite(values).all()):
        bad = [k for k, v in components.items() if not math.isfinite(float(v.detach()))]
        raise NonFiniteLossError(f"{model}: loss component {bad[0]} is {float(components[bad[0]].detach())} at epoch {epoch}, "
                                 f"step {step}; training stopped (checkpoints of earlier epochs are kept)")


def _set_requires_grad(nets: Sequence[torch.nn.Module], flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


class Trainer:
    """The networks, optimisers and buffers of one model, and its training step.

    Parameters
    ----------
    model : str
        One of :data:`vstain.models.MODEL_NAMES`.
    training : TrainingConfig
        ``profile.training``.
    seed : int
        Seeds the weight initialisation and the image buffers.
    device : torch.device
    """

    def __init__(self, model: str, training: Any, seed: int, device: torch.device | str = "cpu",
                 channels_last: bool = False, cpu_bf16: bool = False) -> None:
        self.spec = model_spec(model)
        self.channels_last = bool(channels_last)
        self.cpu_bf16 = bool(cpu_bf16)
        self.model = model
        self.device = torch.device(device)
        self.weights = loss_weights(model, training)
        self.architecture = architecture(model, training)
        self.nets = {k: v.to(self.device) for k, v in build_networks(model, training, seed).items()}
        if self.channels_last:
            self.nets = {k: v.to(memory_format=torch.channels_last) for k, v in self.nets.items()}
        generators = [v for k, v in self.nets.items() if k.startswith("G")]
        discriminators = [v for k, v in self.nets.items() if k.startswith("D")]
        betas = (training.beta1, training.beta2)
        self.optimisers = {
            "G": torch.optim.Adam(itertools.chain(*(g.parameters() for g in generators)), lr=training.lr, betas=betas),
            "D": torch.optim.Adam(itertools.chain(*(d.parameters() for d in discriminators)), lr=training.lr,
                                  betas=betas),
        }
        # Pix2Pix shows the discriminator the current pair only (reference implementation: no pool).
        pool = training.pool_size if self.spec.family == "cyclegan" else 0
        self.buffers = {"X": losses.ImageBuffer(pool, seed + 1), "Y": losses.ImageBuffer(pool, seed + 2)}
        self.autocast = self.device.type == "cuda"

    def generator_components(self) -> list[str]:
        """Names of the generator loss components, the total last."""
        if self.spec.family == "pix2pix":
            return ["gan", "l1", "total"]
        return ["gan", "cyc", "id"] + (["px", "gs"] if self.spec.paired_losses else []) + ["total"]

    def discriminator_components(self) -> list[str]:
        return ["D_XY"] if self.spec.family == "pix2pix" else ["D_X", "D_Y"]

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        if self.cpu_bf16:  # measured in benchmarks/train_speed.py; off in training
            return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(self, batch: dict[str, Any], epoch: int = 0, step: int = 0) -> dict[str, float]:
        """One generator update then one discriminator update; returns every loss component."""
        x = batch["x"].to(self.device, non_blocking=True)
        y = batch["y"].to(self.device, non_blocking=True)
        mask = batch["mask"].to(self.device, non_blocking=True)
        if self.channels_last:
            x, y = x.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)
        if self.spec.family == "pix2pix":
            return self._step_pix2pix(x, y, mask, epoch, step)
        return self._step_cyclegan(x, y, mask, epoch, step)

    def _step_cyclegan(self, x, y, mask, epoch, step) -> dict[str, float]:
        g_xy, g_yx, d_x, d_y = (self.nets[k] for k in ("G_XY", "G_YX", "D_X", "D_Y"))
        _set_requires_grad([d_x, d_y], False)
        self.optimisers["G"].zero_grad(set_to_none=True)
        with self._autocast():
            fake_y, fake_x = g_xy(x), g_yx(y)
            components = {
                "gan": losses.adversarial_loss(d_x(fake_x), d_y(fake_y)),
                "cyc": losses.cycle_loss(x, g_yx(fake_y), y, g_xy(fake_x), mask),
                "id": losses.identity_loss(y, g_xy(y), x, g_yx(x), mask),
            }
            if self.spec.paired_losses:
                components["px"] = losses.pixelwise_loss(y, fake_y, x, fake_x, mask)
                components["gs"] = losses.greyscale_loss(fake_x, mask)
                components["total"] = losses.total_paired(components, self.weights)
            else:
                components["total"] = losses.total_unpaired(components, self.weights)
        _finite(components, epoch, step, self.model)
        components["total"].backward()
        self.optimisers["G"].step()

        _set_requires_grad([d_x, d_y], True)
        self.optimisers["D"].zero_grad(set_to_none=True)
        with self._autocast():
            d_components = {
                "D_X": losses.discriminator_loss(d_x(x), d_x(self.buffers["X"].query(fake_x))),
                "D_Y": losses.discriminator_loss(d_y(y), d_y(self.buffers["Y"].query(fake_y))),
            }
        _finite(d_components, epoch, step, self.model)
        (d_components["D_X"] + d_components["D_Y"]).backward()
        self.optimisers["D"].step()
        return {k: float(v.detach()) for k, v in {**components, **d_components}.items()}

    def _step_pix2pix(self, x, y, mask, epoch, step) -> dict[str, float]:
        g, d = self.nets["G_XY"], self.nets["D_XY"]
        _set_requires_grad([d], False)
        self.optimisers["G"].zero_grad(set_to_none=True)
        with self._autocast():
            fake_y = g(x)
            components = {
                "gan": losses.conditional_adversarial_loss(d(torch.cat([x, fake_y], 1))),
                "l1": losses.l1_loss(y, fake_y, mask),
            }
            components["total"] = losses.total_pix2pix(components, self.weights)
        _finite(components, epoch, step, self.model)
        components["total"].backward()
        self.optimisers["G"].step()

        _set_requires_grad([d], True)
        self.optimisers["D"].zero_grad(set_to_none=True)
        with self._autocast():
            d_loss = losses.discriminator_loss(d(torch.cat([x, y], 1)), d(torch.cat([x, fake_y.detach()], 1)))
        _finite({"D_XY": d_loss}, epoch, step, self.model)
        d_loss.backward()
        self.optimisers["D"].step()
        return {**{k: float(v.detach()) for k, v in components.items()}, "D_XY": float(d_loss.detach())}

    # ---- state

    def generator_states(self) -> dict[str, dict[str, torch.Tensor]]:
        return {k: {n: t.detach().cpu().clone() for n, t in v.state_dict().items()}
                for k, v in self.nets.items() if k.startswith("G")}

    def state_dict(self) -> dict[str, Any]:
        return {
            "networks": {k: {n: t.detach().cpu() for n, t in v.state_dict().items()} for k, v in self.nets.items()},
            "optimisers": {k: v.state_dict() for k, v in self.optimisers.items()},
            "buffers": {k: v.state_dict() for k, v in self.buffers.items()},
        }

    def load_state_dict(self, state: dict[str, Any], path: Path) -> None:
        try:
            for name, net in self.nets.items():
                net.load_state_dict(state["networks"][name])
            for name, opt in self.optimisers.items():
                opt.load_state_dict(state["optimisers"][name])
            for name, buffer in self.buffers.items():
                buffer.load_state_dict(state["buffers"][name], self.device)
        except (KeyError, RuntimeError, ValueError) as err:
            raise ValueError(f"{path}: the checkpoint does not fit model {self.model} ({err})") from err


# --------------------------------------------------------------------------- the run


def train_model(profile: Profile | str, model: str, fold: int = 0, *, stain: str = "toluidine_blue",
                epochs: int | None = None, pairs: Sequence[RegisteredPair] | None = None,
                out_dir: str | Path | None = None, resume: bool = True, device: str | None = None,
                progress: bool = True, root: str | Path | None = None) -> Path:
    """Train ``model`` on ``fold`` and write its history and checkpoints.

    Parameters
    ----------
    profile : Profile or str
        Every number (patches, widths, lambdas, epochs, seed) comes from it.
    model : str
        ``mod_cyclegan``, ``cyclegan``, ``cyclegan_invct`` or ``pix2pix``.
    fold : int
        Cross-validation fold; its ``train`` pairs are used.
    stain : {"toluidine_blue", "he"}
    epochs : int, optional
        Total epochs (default ``profile.training.epochs``, H&E ``profile.he.epochs``).
        With ``resume``, a run stopped earlier continues up to this many epochs.
    pairs : sequence of RegisteredPair, optional
        Training pairs; default: the fold's registered pairs (:func:`load_training_pairs`).
    out_dir : path, optional
        Default :func:`model_dir`.
    resume : bool
        Continue from ``out_dir/last.pt`` when it exists (it must be of the same model,
        architecture and pairs).
    device : str, optional
        ``"cpu"``, ``"cuda"`` or ``"auto"``; default ``profile.device``. On CUDA the
        forward passes run under bf16 autocast.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    Path
        The run folder.

    Raises
    ------
    ValueError
        Bad pairs (see :class:`vstain.data.PatchSampler`), a checkpoint of another model
        or shape, or a non-finite loss (:class:`NonFiniteLossError`, naming epoch and
        component). Checkpoints are written only at the end of an epoch, atomically.
    """
    profile = _profile(profile)
    spec = model_spec(model)
    _check_stain(stain)
    training = profile.training
    epochs = _epochs_for(profile, stain) if epochs is None else int(epochs)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if pairs is None:
        pairs = load_training_pairs(profile, fold, "train", stain, root)
    pairs = list(pairs)
    out = Path(out_dir) if out_dir is not None else model_dir(profile.name, model, fold, stain, root)
    seed = run_seed(profile.seed, model, fold, stain)
    torch_device = _device(profile, device)

    sampler = PatchSampler.from_profile(pairs, training, seed, invert_ct=spec.invert_ct)
    identity = {
        "model": model, "architecture": architecture(model, training), "fold": int(fold), "stain": stain,
        "profile": profile.name, "seed": seed, "patch_size": training.patch_size,
        "pair_ids": [p.pair_id for p in pairs],
    }

    # The global torch random state (dropout) and thread count are set here and restored afterwards.
    with torch.random.fork_rng(devices=[torch_device] if torch_device.type == "cuda" else []), \
            _threads(training.threads):
        torch.manual_seed(seed)
        trainer = Trainer(model, training, seed, torch_device, channels_last=training.channels_last,
                          cpu_bf16=use_cpu_bf16(training.cpu_bf16))
        history: list[dict[str, Any]] = []
        best: dict[str, float] = {}
        start_epoch = 1
        last_path = out / "last.pt"
        if resume and last_path.is_file():
            checkpoint = _load(last_path)
            _compare({k: identity[k] for k in ("model", "architecture", "fold", "stain", "patch_size", "pair_ids")},
                     {k: checkpoint.get(k) for k in ("model", "architecture", "fold", "stain", "patch_size",
                                                      "pair_ids")}, "", last_path)
            trainer.load_state_dict(checkpoint["state"], last_path)
            torch.set_rng_state(checkpoint["torch_rng"])
            history = list(checkpoint["history"])
            best = dict(checkpoint["best"])
            start_epoch = int(checkpoint["epoch"]) + 1

        components = trainer.generator_components()
        steps = len(sampler)
        bar = tqdm(total=(epochs - start_epoch + 1) * steps if epochs >= start_epoch else 0,
                   desc=f"{model} fold {fold}", unit="step", disable=not progress)
        for epoch in range(start_epoch, epochs + 1):
            for net in trainer.nets.values():
                net.train()
            started = time.perf_counter()
            sums: dict[str, float] = {}
            for index, batch in enumerate(sampler.epoch(epoch)):
                values = trainer.step(batch, epoch, index)
                for key, value in values.items():
                    sums[key] = sums.get(key, 0.0) + value
                bar.update(1)
                bar.set_postfix(epoch=epoch, total=f"{values['total']:.3f}")
            row = {"epoch": epoch, **{k: v / steps for k, v in sums.items()},
                   "seconds": time.perf_counter() - started}
            history.append(row)
            record = {"format": CHECKPOINT_FORMAT, **identity, "epoch": epoch,
                      "directions": {d: n for d, n in DIRECTIONS.items() if n in trainer.nets},
                      "invert_ct": spec.invert_ct, "provenance": provenance(profile, model=model, fold=int(fold))}
            for component in components:
                if row[component] < best.get(component, math.inf):
                    best[component] = row[component]
                    _save({**record, "component": component, "value": row[component],
                           "generators": trainer.generator_states()}, out / f"best_{component}.pt")
            write_csv(out / "history.csv", pd.DataFrame(history))
            _save({**record, "component": "last", "generators": trainer.generator_states(),
                   "state": trainer.state_dict(), "torch_rng": torch.get_rng_state(), "history": history,
                   "best": best}, last_path)
        bar.close()
    write_json(out / "training.json", {
        **{k: v for k, v in identity.items()}, "epochs": epochs, "epochs_done": len(history),
        "best": best, "best_epoch": {c: int(min(history, key=lambda r: r[c])["epoch"]) for c in components}
        if history else {}, "seconds": float(sum(r["seconds"] for r in history)), "steps_per_epoch": steps,
        "device": str(torch_device), "provenance": provenance(profile, model=model, fold=int(fold)),
    })
    return out


def is_trained(profile: Profile | str, model: str, fold: int, stain: str = "toluidine_blue",
               root: str | Path | None = None) -> bool:
    """Whether the run folder holds a finished run of the profile's epochs and architecture."""
    profile = _profile(profile)
    out = model_dir(profile.name, model, fold, stain, root)
    summary = out / "training.json"
    if not (summary.is_file() and (out / "last.pt").is_file()):
        return False
    record = json.loads(summary.read_text())
    return (record.get("epochs_done", 0) >= _epochs_for(profile, stain)
            and record.get("architecture") == json.loads(json.dumps(architecture(model, profile.training))))


def _prepare_registered_pairs(profile: Profile, stain: str, progress: bool, root: str | Path | None) -> None:
    """Run the idempotent registration stage when it is available and the results root is the default."""
    if root is not None:
        return  # a custom results root holds its own registered pairs
    try:
        from vstain.prepare import prepare_registered_pairs
    except ImportError:
        try:
            from vstain.registration import prepare_registered_pairs
        except ImportError:
            return  # load_training_pairs names what is missing
    prepare_registered_pairs(profile, stain=stain, progress=progress)


def fold_pairs(profile: Profile | str, fold: int, role: str = "train", stain: str = "toluidine_blue", *,
               source: str = "registered", progress: bool = True, root: str | Path | None = None
               ) -> list[RegisteredPair]:
    """The pairs of one fold and role: registered (the pipeline) or the phantom's ground truth.

    ``source="registered"`` runs the idempotent registration stage when needed and reads
    ``results/<profile>/registered/``; ``"ground_truth"`` registers by the phantom's
    ground truth (:func:`ground_truth_pairs`).
    """
    profile = _profile(profile)
    if source == "registered":
        _prepare_registered_pairs(profile, stain, progress, root)
        return load_training_pairs(profile, fold, role, stain, root)
    if source == "ground_truth":
        return ground_truth_pairs(profile, fold, role, stain, root)
    raise ValueError(f"unknown source {source!r}; valid: registered, ground_truth")


def ensure_trained(profile: Profile | str, model: str, fold: int = 0, stain: str = "toluidine_blue", *,
                   source: str = "registered", progress: bool = True, root: str | Path | None = None) -> Path:
    """Train ``model`` on ``fold`` unless a finished run exists; resume an unfinished one.

    ``source="registered"`` trains on the registered pairs (the pipeline);
    ``"ground_truth"`` on the phantom's ground-truth pairs (:func:`ground_truth_pairs`).
    """
    profile = _profile(profile)
    out = model_dir(profile.name, model, fold, stain, root)
    if is_trained(profile, model, fold, stain, root):
        return out
    pairs = fold_pairs(profile, fold, "train", stain, source=source, progress=progress, root=root)
    return train_model(profile, model, fold, stain=stain, pairs=pairs, progress=progress, root=root)


# --------------------------------------------------------------------------- loading for inference


def load_generator(checkpoint_path: str | Path, direction: str = "ct_to_histology") -> tuple[torch.nn.Module, dict]:
    """Rebuild one generator from a checkpoint file alone.

    Parameters
    ----------
    checkpoint_path : path
        ``best_<component>.pt`` or ``last.pt`` of a run.
    direction : {"ct_to_histology", "histology_to_ct"}
        ``G_XY`` or ``G_YX`` (Pix2Pix has only ``ct_to_histology``).

    Returns
    -------
    generator : torch.nn.Module
        On CPU, in eval mode.
    info : dict
        ``model``, ``network`` (G_XY / G_YX), ``direction``, ``architecture``,
        ``in_channels``, ``invert_ct`` (map CT with ``ct_to_network(ct, invert=True)``
        and back with ``network_to_ct(t, invert=True)``), ``patch_size``, ``epoch``,
        ``component``, ``value``, ``fold``, ``stain``, ``profile``, ``seed``, ``provenance``.
    """
    path = Path(checkpoint_path)
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
    checkpoint = _load(path)
    network = checkpoint.get("directions", {}).get(direction)
    if network is None:
        raise ValueError(f"{path}: model {checkpoint.get('model')} has no {direction} generator "
                         f"(field directions: {checkpoint.get('directions')})")
    arch = checkpoint["architecture"]["generator"]
    generator = build_generator(arch)
    try:
        generator.load_state_dict(checkpoint["generators"][network])
    except (KeyError, RuntimeError) as err:
        raise ValueError(f"{path}: field generators.{network} does not fit its architecture ({err})") from err
    generator.eval()
    info = {k: checkpoint.get(k) for k in ("model", "architecture", "invert_ct", "patch_size", "epoch", "component",
                                           "value", "fold", "stain", "profile", "seed", "provenance")}
    info.update(network=network, direction=direction, in_channels=int(arch["in_channels"]),
                out_channels=int(arch["out_channels"]), path=str(path))
    return generator, info


# --------------------------------------------------------------------------- quick looks at a trained model


def _mask_box(mask: np.ndarray) -> tuple[slice, slice]:
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def stain_pair(checkpoint_path: str | Path, pair: RegisteredPair, patch_size: int, step: int,
               batch_size: int = 16) -> np.ndarray:
    """The generated histology (uint8 RGB) of a whole pair's CT by overlapping patch inference."""
    from vstain.infer import ct_to_histology_slide

    generator, info = load_generator(checkpoint_path, "ct_to_histology")
    return ct_to_histology_slide(generator, pair.ct, patch_size=patch_size, step=step, batch_size=batch_size,
                                 info=info)


def validation_scores(checkpoint_path: str | Path, pairs: Sequence[RegisteredPair], patch_size: int, step: int,
                      batch_size: int = 16) -> pd.DataFrame:
    """SSIM and PSNR of generated vs real histology per pair, next to the raw CT vs histology baseline.

    A quick check of a training run (the full evaluation with LPIPS and 256 px patches is
    ``vstain.metrics``): each whole pair is stained by overlapping patches; outside the
    sample-correspondence mask every image is replaced by the real image's mean
    background value (paper 2.8: outputs are shown masked; the masked losses never
    trained there), and both scores are computed on the bounding box of the mask.

    Returns
    -------
    DataFrame
        ``pair_id, material, ssim, psnr, ssim_baseline, psnr_baseline``.
    """
    from vstain.infer import apply_mask, background_fill
    from vstain.metrics import psnr, raw_ct_as_rgb, ssim

    rows = []
    for pair in pairs:
        generated = stain_pair(checkpoint_path, pair, patch_size, step, batch_size)
        box = _mask_box(pair.mask)
        fill = background_fill(pair.histology, pair.mask)
        ct_rgb = raw_ct_as_rgb(pair.ct)
        real = apply_mask(pair.histology, pair.mask, fill)[box]
        fake = apply_mask(generated, pair.mask, fill)[box]
        ct_rgb = apply_mask(ct_rgb, pair.mask, background_fill(ct_rgb, pair.mask))[box]
        rows.append({"pair_id": pair.pair_id, "material": pair.material, "ssim": ssim(real, fake),
                     "psnr": psnr(real, fake), "ssim_baseline": ssim(real, ct_rgb), "psnr_baseline": psnr(real, ct_rgb)})
    return pd.DataFrame(rows)


def patch_panels(checkpoint_path: str | Path, pairs: Sequence[RegisteredPair], patch_size: int, n: int = 4,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Fig. 4a-style patches: real CT, generated histology, mask, real histology, generated CT.

    ``n`` patches at random positions (no augmentation) of ``pairs``; returns
    ``real_ct`` (n, P, P) float in [0, 1] of the 16-bit range, ``generated_histology``
    (n, P, P, 3) uint8, ``mask`` (n, P, P) bool, ``real_histology`` (n, P, P, 3) uint8 and,
    for the CycleGANs, ``generated_ct`` (n, P, P) like ``real_ct``.
    """
    from vstain.data import network_to_ct, network_to_histology

    g_xy, info = load_generator(checkpoint_path, "ct_to_histology")
    invert = bool(info["invert_ct"])
    sampler = PatchSampler(pairs, patch_size, max(1, -(-n // len(pairs))), n, seed, augment=False, invert_ct=invert)
    batch = next(iter(sampler.epoch(0)))
    with torch.no_grad():
        panels = {
            "real_ct": network_to_ct(batch["x"], invert=invert).astype(np.float32) / 65535.0,
            "generated_histology": network_to_histology(g_xy(batch["x"])),
            "mask": batch["mask"][:, 0].numpy().astype(bool),
            "real_histology": network_to_histology(batch["y"]),
        }
        if "histology_to_ct" in torch.load(checkpoint_path, map_location="cpu", weights_only=True)["directions"]:
            g_yx, _ = load_generator(checkpoint_path, "histology_to_ct")
            panels["generated_ct"] = network_to_ct(g_yx(batch["y"]), invert=invert).astype(np.float32) / 65535.0
    return panels


# --------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="quick", help="profile name or YAML path (default: quick)")
    parser.add_argument("--model", required=True, choices=MODEL_NAMES)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--stain", default="toluidine_blue", choices=("toluidine_blue", "he"))
    parser.add_argument("--epochs", type=int, default=None, help="total epochs (default: from the profile)")
    parser.add_argument("--source", default="registered", choices=("registered", "ground_truth"),
                        help="training pairs: the registration stage's, or the phantom's ground truth")
    parser.add_argument("--no-resume", action="store_true", help="start again even if last.pt exists")
    parser.add_argument("--device", default=None, choices=("cpu", "cuda", "auto"))
    parser.add_argument("--results", default=None, help="results root (default: $VSTAIN_RESULTS or ./results)")


def run_cli(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    loader = load_training_pairs if args.source == "registered" else ground_truth_pairs
    pairs = loader(profile, args.fold, "train", args.stain, args.results)
    out = train_model(profile, args.model, args.fold, stain=args.stain, epochs=args.epochs, pairs=pairs,
                      resume=not args.no_resume, device=args.device, root=args.results)
    print(out)
    return 0
