"""Training of the four models (paper 2.6), resumable and deterministic on CPU.

One run trains one model on a list of registered pairs and writes, atomically, into its
run folder (the stage :mod:`vstain.stages.train` chooses it: ``results/<profile>/models/<model>/fold<k>/``)::

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
version, so :func:`vstain.models.checkpoint.load_generator` rebuilds a network from the file alone.

A run can also train on several processes at once (``ranks`` of :func:`train_model`; distributed
data parallel under ``torchrun``, :mod:`vstain.distributed`): the same files, written by rank 0, and
the numbers of one process training on the whole global batch.

Examples
--------
>>> import numpy as np, tempfile
>>> from vstain.config import load_profile
>>> from vstain.models.checkpoint import load_generator
>>> from vstain.pairs import RegisteredPair
>>> rng = np.random.default_rng(0)
>>> pair = RegisteredPair("p0", "Mg", "toluidine_blue", rng.integers(0, 60000, (40, 40)).astype(np.uint16),
...                       rng.integers(0, 255, (40, 40, 3)).astype(np.uint8), np.ones((40, 40), bool), 5.0)
>>> out = train_model([pair], tempfile.mkdtemp(), "cyclegan", load_profile("smoke").training, epochs=1, seed=2025,
...                   progress=False)
>>> generator, info = load_generator(out / "last.pt")
>>> info["model"], info["direction"], info["network"]
('cyclegan', 'ct_to_histology', 'G_XY')
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import threading
import time
import zlib
from pathlib import Path
from queue import Full, Queue
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm  # plain text bars: the same in a terminal, a log and a notebook

from vstain import distributed, losses
from vstain.data import PatchSampler
from vstain.distributed import Ranks
from vstain.io import provenance, write_csv, write_json
from vstain.models import architecture, build_networks, loss_weights, model_spec
from vstain.models.checkpoint import (CHECKPOINT_FORMAT, compare_records, load_checkpoint, load_generator,
                                     save_checkpoint)
from vstain.normalise import ct_statistics
from vstain.pairs import RegisteredPair
from vstain.vocabulary import GENERATOR_OF, STAINS, check_word
# the quick looks at a trained model and the checkpoint choice live in their own part; their names are this module's
from vstain.selection import (SELECTION_RULES, patch_panels, run_checkpoints, select_checkpoint,  # noqa: F401
                              stain_pair, validation_medians, validation_scores)


class NonFiniteLossError(ValueError):
    """A loss became NaN or infinite; the message names the epoch, step and component."""


# --------------------------------------------------------------------------- small helpers


def run_seed(seed: int, model: str, fold: int, stain: str = "toluidine_blue") -> int:
    """The seed of one run, derived from the profile seed, the model, the fold and the stain.

    Examples
    --------
    >>> run_seed(2025, "pix2pix", 0) == run_seed(2025, "pix2pix", 0) != run_seed(2025, "pix2pix", 1)
    True
    """
    sequence = np.random.SeedSequence([int(seed), int(fold), zlib.crc32(model.encode()), zlib.crc32(stain.encode())])
    return int(sequence.generate_state(1, np.uint32)[0])


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


#: ``training.cuda_precision`` / ``inference.cuda_precision``: the autocast dtype on CUDA (None: fp32).
CUDA_PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def forward_dtype(inference: Any, device: str) -> torch.dtype:
    """The dtype of inference's forward passes: ``inference.cuda_precision`` on CUDA, bf16 autocast on the CPU
    where ``inference.cpu_bf16`` asks for it (``auto``: where the CPU computes bf16 natively), else float32.

    ``inference`` is a profile's ``inference`` section (anything with ``cuda_precision`` and ``cpu_bf16``).

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> forward_dtype(SimpleNamespace(cuda_precision="bf16", cpu_bf16="off"), "cpu")
    torch.float32
    >>> forward_dtype(SimpleNamespace(cuda_precision="bf16", cpu_bf16="off"), "cuda:0")
    torch.bfloat16
    """
    if str(device).startswith("cuda"):
        return CUDA_PRECISIONS[inference.cuda_precision] or torch.float32
    return torch.bfloat16 if use_cpu_bf16(inference.cpu_bf16) else torch.float32


def cuda_precision_plan(precision: str, device_type: str) -> tuple[torch.dtype | None, bool]:
    """What ``training.cuda_precision`` means on a device: the autocast dtype and whether to scale the loss.

    On CUDA, ``fp32`` runs without autocast, ``bf16`` autocasts to bfloat16 (fp32's exponent range:
    no scaler) and ``fp16`` autocasts to float16 with a gradient scaler (small fp16 gradients
    underflow without loss scaling). Elsewhere the setting means nothing: fp32, no scaler.

    Raises
    ------
    ValueError
        If ``precision`` is not one of :data:`CUDA_PRECISIONS`.

    Examples
    --------
    >>> cuda_precision_plan("fp16", "cuda")
    (torch.float16, True)
    >>> cuda_precision_plan("bf16", "cuda"), cuda_precision_plan("fp16", "cpu")
    ((torch.bfloat16, False), (None, False))
    """
    if precision not in CUDA_PRECISIONS:
        raise ValueError(f"training.cuda_precision must be one of {list(CUDA_PRECISIONS)}, got {precision!r}")
    if device_type != "cuda":
        return None, False
    return CUDA_PRECISIONS[precision], precision == "fp16"


def learning_rate_factor(epoch: int, epochs: int, decay_start_epoch: int) -> float:
    """The learning-rate multiplier of an epoch (1-based): constant, then linear decay towards zero.

    ``decay_start_epoch=0`` keeps the rate constant; otherwise epochs after ``decay_start_epoch``
    decay linearly as in the CycleGAN base code (``1 - max(0, e - k) / (n - k)`` for 0-based
    epoch ``e``). Computed from the epoch alone, so a resumed run continues the same schedule.

    Examples
    --------
    >>> [round(learning_rate_factor(e, 5, 2), 2) for e in range(1, 6)]
    [1.0, 1.0, 1.0, 0.67, 0.33]
    >>> learning_rate_factor(9, 10, 0)
    1.0
    """
    if decay_start_epoch <= 0:
        return 1.0
    return 1.0 - max(0, epoch - 1 - decay_start_epoch) / max(1, epochs - decay_start_epoch)


def prefetched(batches: Iterable[dict[str, Any]], depth: int, *, pin_memory: bool = False) -> Iterator[dict[str, Any]]:
    """Yield ``batches`` as they come, sampled up to ``depth`` ahead in a background thread.

    Patch sampling (NumPy and SciPy, which release the GIL) then overlaps the network step; with
    ``pin_memory`` the tensors are page-locked so ``.to("cuda", non_blocking=True)`` is asynchronous.
    The order is the iterator's own, so results are the same as without prefetching.

    Examples
    --------
    >>> [b["i"] for b in prefetched(({"i": i} for i in range(5)), 2)]
    [0, 1, 2, 3, 4]
    """
    if depth <= 0:
        yield from batches
        return
    queue: Queue = Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                if pin_memory:
                    batch = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                while not stop.is_set():
                    try:
                        queue.put(batch, timeout=0.1)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    return
            queue.put(done)
        except BaseException as err:  # noqa: BLE001  (handed to the consumer, raised there)
            queue.put(err)

    thread = threading.Thread(target=produce, name="vstain-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = queue.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


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
    ranks : Ranks, optional
        This process among the ranks of a distributed run (:mod:`vstain.distributed`): each
        network is wrapped for data parallel training, the masked l1 terms and the image
        buffers act on the global batch, and the loss components returned are averaged over
        the ranks. None: one process, as always.
    """

    def __init__(self, model: str, training: Any, seed: int, device: torch.device | str = "cpu",
                 channels_last: bool = False, cpu_bf16: bool = False, cuda_precision: str = "fp32",
                 ranks: Ranks | None = None) -> None:
        self.spec = model_spec(model)
        self.channels_last = bool(channels_last)
        self.cpu_bf16 = bool(cpu_bf16)
        self.model = model
        self.device = torch.device(device)
        self.weights = loss_weights(model, training)
        self.architecture = architecture(model, training)
        self.ranks = ranks
        self.nets = {k: distributed.sync_batch_norm(v, ranks, self.device).to(self.device)
                     for k, v in build_networks(model, training, seed).items()}
        if self.channels_last:
            self.nets = {k: v.to(memory_format=torch.channels_last) for k, v in self.nets.items()}
        # the networks whose backward averages gradients over the ranks (one process: the networks themselves)
        self.synced = {k: distributed.wrap(v, ranks, self.device) for k, v in self.nets.items()}
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
        self.cuda_dtype, needs_scaler = cuda_precision_plan(cuda_precision, self.device.type)
        self.scaler = torch.amp.GradScaler("cuda") if needs_scaler else None

    def generator_components(self) -> list[str]:
        """Names of the generator loss components, the total last."""
        if self.spec.family == "pix2pix":
            return ["gan", "l1", "total"]
        return ["gan", "cyc", "id"] + (["px", "gs"] if self.spec.paired_losses else []) + ["total"]

    def discriminator_components(self) -> list[str]:
        return ["D_XY"] if self.spec.family == "pix2pix" else ["D_X", "D_Y"]

    def set_learning_rate(self, lr: float) -> None:
        """Set the learning rate of both optimisers (the schedule: :func:`learning_rate_factor`)."""
        for optimiser in self.optimisers.values():
            for group in optimiser.param_groups:
                group["lr"] = float(lr)

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def _optimiser_step(self, name: str) -> None:
        if self.scaler is not None:
            self.scaler.step(self.optimisers[name])  # skipped when the scaled gradients overflowed
        else:
            self.optimisers[name].step()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.cuda_dtype is not None:
            return torch.autocast(device_type="cuda", dtype=self.cuda_dtype)
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

    def _l1_share(self, components: dict[str, torch.Tensor], mask: torch.Tensor) -> None:
        """Several ranks: scale the masked l1 terms to this rank's share of the global batch's (in place)."""
        share = distributed.l1_share(mask, self.ranks)
        if share is not None:
            for key in ("cyc", "id", "px", "gs", "l1"):
                if key in components:
                    components[key] = components[key] * share

    def _buffered(self, name: str, fakes: torch.Tensor) -> torch.Tensor:
        """The image buffer's answer to this rank's fakes; several ranks: queried with the global batch."""
        buffer = self.buffers[name]
        if buffer.size == 0 or self.ranks is None or not self.ranks.distributed:
            return buffer.query(fakes)
        return distributed.own_share(buffer.query(distributed.gather_batch(fakes, self.ranks)), self.ranks)

    def _checked(self, components: dict[str, torch.Tensor], epoch: int, step: int) -> dict[str, float]:
        """The components as floats (several ranks: averaged over them), stopped when one is not finite."""
        if self.ranks is None or not self.ranks.distributed:
            _finite(components, epoch, step, self.model)
            return {k: float(v.detach()) for k, v in components.items()}
        values = distributed.mean_over_ranks(components, self.ranks)  # every rank sees the same numbers
        _finite({k: torch.tensor(v) for k, v in values.items()}, epoch, step, self.model)
        return values

    def _step_cyclegan(self, x, y, mask, epoch, step) -> dict[str, float]:
        g_xy, g_yx, d_x, d_y = (self.synced[k] for k in ("G_XY", "G_YX", "D_X", "D_Y"))
        # frozen in the generator update: the plain modules (no gradient of theirs to average)
        frozen_d_x, frozen_d_y = self.nets["D_X"], self.nets["D_Y"]
        _set_requires_grad([frozen_d_x, frozen_d_y], False)
        self.optimisers["G"].zero_grad(set_to_none=True)
        with self._autocast():
            fake_y, fake_x = g_xy(x), g_yx(y)
            components = {
                "gan": losses.adversarial_loss(frozen_d_x(fake_x), frozen_d_y(fake_y)),
                "cyc": losses.cycle_loss(x, g_yx(fake_y), y, g_xy(fake_x), mask),
                "id": losses.identity_loss(y, g_xy(y), x, g_yx(x), mask),
            }
            if self.spec.paired_losses:
                components["px"] = losses.pixelwise_loss(y, fake_y, x, fake_x, mask)
                components["gs"] = losses.greyscale_loss(fake_x, mask)
                self._l1_share(components, mask)
                components["total"] = losses.total_paired(components, self.weights)
            else:
                self._l1_share(components, mask)
                components["total"] = losses.total_unpaired(components, self.weights)
        values = self._checked(components, epoch, step)
        self._backward(components["total"])
        self._optimiser_step("G")

        _set_requires_grad([frozen_d_x, frozen_d_y], True)
        self.optimisers["D"].zero_grad(set_to_none=True)
        with self._autocast():
            d_components = {
                "D_X": losses.discriminator_loss(d_x(x), d_x(self._buffered("X", fake_x))),
                "D_Y": losses.discriminator_loss(d_y(y), d_y(self._buffered("Y", fake_y))),
            }
        d_values = self._checked(d_components, epoch, step)
        self._backward(d_components["D_X"] + d_components["D_Y"])
        self._optimiser_step("D")
        if self.scaler is not None:
            self.scaler.update()
        return {**values, **d_values}

    def _step_pix2pix(self, x, y, mask, epoch, step) -> dict[str, float]:
        g, d, frozen_d = self.synced["G_XY"], self.synced["D_XY"], self.nets["D_XY"]
        _set_requires_grad([frozen_d], False)
        self.optimisers["G"].zero_grad(set_to_none=True)
        with self._autocast():
            fake_y = g(x)
            components = {
                "gan": losses.conditional_adversarial_loss(frozen_d(torch.cat([x, fake_y], 1))),
                "l1": losses.l1_loss(y, fake_y, mask),
            }
            self._l1_share(components, mask)
            components["total"] = losses.total_pix2pix(components, self.weights)
        values = self._checked(components, epoch, step)
        self._backward(components["total"])
        self._optimiser_step("G")

        _set_requires_grad([frozen_d], True)
        self.optimisers["D"].zero_grad(set_to_none=True)
        with self._autocast():
            d_loss = losses.discriminator_loss(d(torch.cat([x, y], 1)), d(torch.cat([x, fake_y.detach()], 1)))
        d_values = self._checked({"D_XY": d_loss}, epoch, step)
        self._backward(d_loss)
        self._optimiser_step("D")
        if self.scaler is not None:
            self.scaler.update()
        return {**values, **d_values}

    # ---- state

    def generator_states(self) -> dict[str, dict[str, torch.Tensor]]:
        return {k: {n: t.detach().cpu().clone() for n, t in v.state_dict().items()}
                for k, v in self.nets.items() if k.startswith("G")}

    def state_dict(self) -> dict[str, Any]:
        return {
            "networks": {k: {n: t.detach().cpu() for n, t in v.state_dict().items()} for k, v in self.nets.items()},
            "optimisers": {k: v.state_dict() for k, v in self.optimisers.items()},
            "buffers": {k: v.state_dict() for k, v in self.buffers.items()},
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any], path: Path) -> None:
        try:
            for name, net in self.nets.items():
                net.load_state_dict(state["networks"][name])
            for name, opt in self.optimisers.items():
                opt.load_state_dict(state["optimisers"][name])
            for name, buffer in self.buffers.items():
                buffer.load_state_dict(state["buffers"][name], self.device)
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
        except (KeyError, RuntimeError, ValueError) as err:
            raise ValueError(f"{path}: the checkpoint does not fit model {self.model} ({err})") from err


# --------------------------------------------------------------------------- the run

#: What a run's last checkpoint must share with the run that resumes it.
_RESUME_KEYS = ("model", "architecture", "fold", "stain", "patch_size", "pair_ids")


def _resume(trainer: Trainer, last_path: Path, identity: dict[str, Any]) -> tuple[list[dict], dict[str, float], int]:
    """Load a run's ``last.pt`` into ``trainer`` (and torch's random state): ``(history, best, first epoch to run)``.

    Without a ``last.pt`` the run starts afresh at epoch 1; one of another run (model, architecture,
    fold, stain, patch size or pairs) is refused, naming the file and the field.
    """
    if not last_path.is_file():
        return [], {}, 1
    checkpoint = load_checkpoint(last_path)
    compare_records({k: identity[k] for k in _RESUME_KEYS}, {k: checkpoint.get(k) for k in _RESUME_KEYS}, "",
                    last_path)
    trainer.load_state_dict(checkpoint["state"], last_path)
    torch.set_rng_state(checkpoint["torch_rng"])
    return list(checkpoint["history"]), dict(checkpoint["best"]), int(checkpoint["epoch"]) + 1


def _epoch_sums(trainer: Trainer, batches: Iterable[dict[str, Any]], epoch: int, bar: tqdm) -> dict[str, float]:
    """One epoch's training steps: the sum of every loss value over its batches."""
    sums: dict[str, float] = {}
    for index, batch in enumerate(batches):
        values = trainer.step(batch, epoch, index)
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + value
        bar.update(1)
        bar.set_postfix(epoch=epoch, total=f"{values['total']:.3f}")
    return sums


def _save_epoch(trainer: Trainer, out: Path, record: dict[str, Any], history: list[dict],
                best: dict[str, float]) -> None:
    """After an epoch (the last row of ``history``): the new minima's ``best_<component>.pt``, the history, ``last.pt``.

    ``best`` is updated in place.
    """
    row = history[-1]
    for component in trainer.generator_components():
        if row[component] < best.get(component, math.inf):
            best[component] = row[component]
            save_checkpoint({**record, "component": component, "value": row[component],
                             "generators": trainer.generator_states()}, out / f"best_{component}.pt")
    write_csv(out / "history.csv", pd.DataFrame(history))
    save_checkpoint({**record, "component": "last", "generators": trainer.generator_states(),
                     "state": trainer.state_dict(), "torch_rng": torch.get_rng_state(), "history": history,
                     "best": best}, out / "last.pt")


def train_model(pairs: Sequence[RegisteredPair], out_dir: str | Path, model: str, training: Any, *, epochs: int,
                seed: int, fold: int = 0, stain: str = "toluidine_blue", profile_name: str = "",
                device: str | torch.device = "cpu", resume: bool = True, progress: bool = True,
                ranks: Ranks | None = None, inference: Any = None) -> Path:
    """Train ``model`` on ``pairs`` and write its history and checkpoints into ``out_dir``.

    Parameters
    ----------
    pairs : sequence of RegisteredPair
        The training pairs.
    out_dir : path
        The run folder (created).
    model : str
        ``mod_cyclegan``, ``cyclegan``, ``cyclegan_invct`` or ``pix2pix``.
    training : TrainingConfig
        ``profile.training``: patches, widths, lambdas, optimiser, threads, bf16 and memory format.
    epochs : int
        Total epochs. With ``resume``, a run stopped earlier continues up to this many epochs.
    seed : int
        The study's seed (``profile.seed``); the run's own seed is :func:`run_seed` of it,
        the model, the fold and the stain.
    fold : int
        Cross-validation fold the pairs come from (recorded, and part of the run's seed).
    stain : {"toluidine_blue", "he"}
    profile_name : str
        Recorded in the checkpoints and the provenance.
    inference : InferenceConfig, optional
        ``profile.inference``, recorded in the checkpoints (``inference``): ``vstain stain`` tiles
        with the settings the model was trained beside, whatever profile files exist where it runs.
    device : str or torch.device
        A resolved device (``"cpu"`` or ``"cuda"``). On CUDA the forward passes run in
        ``training.cuda_precision`` (fp32, bf16 autocast, or fp16 autocast with a gradient scaler).
    resume : bool
        Continue from ``out_dir/last.pt`` when it exists (it must be of the same model,
        architecture and pairs).
    progress : bool
        Show a tqdm bar (rank 0 only).
    ranks : Ranks, optional
        This process among the ranks of a distributed run (:mod:`vstain.distributed`; the process
        group joined, ``device`` this rank's). Every rank calls this function with the same
        arguments; ``training.batch_size`` is the global batch (a multiple of the ranks), each
        rank draws its share of the epoch's patches (``PatchSampler.epoch(shard=...)``), the
        torch seed of each epoch is the rank's own, and only rank 0 writes. ``Ranks()`` (one
        rank) draws the same sharded patches as any number of ranks: the one-process run that a
        distributed run equals. None: the one-process run as it always was.

    Returns
    -------
    Path
        The run folder.

    Raises
    ------
    ValueError
        Bad pairs (see :class:`vstain.data.PatchSampler`), a checkpoint of another model
        or shape, a global batch that the ranks do not divide, or a non-finite loss
        (:class:`NonFiniteLossError`, naming epoch and component). Checkpoints are written
        only at the end of an epoch, atomically.
    """
    spec = model_spec(model)
    check_word(stain, STAINS, "stain")
    epochs = int(epochs)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    pairs = list(pairs)
    out = Path(out_dir)
    study_seed = int(seed)
    seed = run_seed(study_seed, model, fold, stain)
    torch_device = torch.device(device)
    # where the artefacts came from: the same record as vstain.io.provenance(profile, model=..., fold=...)
    origin = {**provenance(), "profile": profile_name, "seed": study_seed, "model": model, "fold": int(fold)}

    sampler = PatchSampler.from_profile(pairs, training, seed, invert_ct=spec.invert_ct)
    shard = ranks.shard if ranks is not None else None
    if shard is not None:
        sampler.check_shard(shard)
    main = ranks is None or ranks.is_main  # the process that writes and shows progress
    identity = {
        "model": model, "architecture": architecture(model, training), "fold": int(fold), "stain": stain,
        "profile": profile_name, "seed": seed, "patch_size": training.patch_size,
        "pair_ids": [p.pair_id for p in pairs],
    }
    # What the model learns from: `vstain stain` warns when a volume's normalised CT is unlike it.
    ct_stats = ct_statistics([p.ct for p in pairs], [p.mask for p in pairs], seed=seed) if pairs else None
    # ... and at what voxel size: `vstain stain` warns when a volume's is far from it
    ct_voxel_um = float(np.median([p.pixel_size_um for p in pairs])) if pairs else None
    # The global torch random state (dropout) and thread count are set here and restored afterwards.
    with torch.random.fork_rng(devices=[torch_device] if torch_device.type == "cuda" else []), \
            _threads(training.threads):
        torch.manual_seed(seed)
        trainer = Trainer(model, training, seed, torch_device, channels_last=training.channels_last,
                          cpu_bf16=use_cpu_bf16(training.cpu_bf16), cuda_precision=training.cuda_precision,
                          ranks=ranks)
        last_path = out / "last.pt"
        history, best, start_epoch = _resume(trainer, last_path, identity) if resume else ([], {}, 1)

        components = trainer.generator_components()
        steps = len(sampler)
        bar = tqdm(total=(epochs - start_epoch + 1) * steps if epochs >= start_epoch else 0,
                   desc=f"{model} fold {fold}", unit="step", disable=not (progress and main))
        for epoch in range(start_epoch, epochs + 1):
            for net in trainer.nets.values():
                net.train()
            if ranks is not None:  # each rank's own dropout draws, the same again when the epoch is resumed
                torch.manual_seed(distributed.rank_seed(seed, epoch, ranks.rank))
            started = time.perf_counter()
            trainer.set_learning_rate(training.lr * learning_rate_factor(epoch, epochs, training.lr_decay_start_epoch))
            batches = prefetched(sampler.epoch(epoch, shard), training.prefetch_batches,
                                 pin_memory=torch_device.type == "cuda")
            sums = _epoch_sums(trainer, batches, epoch, bar)
            row = {"epoch": epoch, **{k: v / steps for k, v in sums.items()},
                   "seconds": time.perf_counter() - started}
            history.append(row)
            if not main:  # the other ranks keep the same history and minima, and write nothing
                best.update({c: row[c] for c in components if row[c] < best.get(c, math.inf)})
                continue
            record = {"format": CHECKPOINT_FORMAT, **identity, "epoch": epoch, "ct_statistics": ct_stats,
                      "ct_voxel_um": ct_voxel_um,
                      "inference": dataclasses.asdict(inference) if inference is not None else None,
                      "directions": {d: n for d, n in GENERATOR_OF.items() if n in trainer.nets},
                      "invert_ct": spec.invert_ct, "provenance": origin, **distributed.describe(ranks)}
            _save_epoch(trainer, out, record, history, best)
        bar.close()
    if not main:
        return out
    write_json(out / "training.json", {
        **{k: v for k, v in identity.items()}, "epochs": epochs, "epochs_done": len(history),
        "best": best, "best_epoch": {c: int(min(history, key=lambda r: r[c])["epoch"]) for c in components}
        if history else {}, "seconds": float(sum(r["seconds"] for r in history)), "steps_per_epoch": steps,
        "device": str(torch_device), "provenance": origin, **distributed.describe(ranks),
    })
    return out


