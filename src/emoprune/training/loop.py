"""The one training loop (every model's stage uses it) and its helpers.

Kept deliberately plain, in the style of torchvision's classification reference: the caller builds
the model and optimizer, ``fit`` runs epochs over in-memory tensors, and everything that is not
plain training (pruning, MLflow logging, checkpoints) hooks in through per-epoch callbacks.

Reproducibility: every source of randomness inside an epoch (shuffle order, augmentation, the
global torch RNG used by e.g. dropout) is seeded from ``(seed, epoch)``, so an epoch's batches do
not depend on what ran before it. That is what lets a run resumed at epoch k (model + optimizer
state restored) replay exactly the epochs an uninterrupted run would have.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from emoprune.errors import UserError

Callback = Callable[["EpochStats", nn.Module], None]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available, else cpu; ``cpu``; ``cuda`` / ``cuda:N`` (must exist)."""
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} requested but CUDA is not available; use device: cpu")
        try:
            device = torch.device(name)
        except RuntimeError as e:
            raise UserError(f"device {name!r} is not a valid device: {e}") from None
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s)")
        return device
    raise UserError(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}")


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 matmuls natively: a GPU that reports it, or a CPU with
    AVX512-BF16 or AMX (elsewhere torch emulates bf16, slower than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where ``bf16_supported(device)``, else ``fp32``; ``fp32``; ``bf16``
    (also where only emulated: slower, but the user asked for it)."""
    if name == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    if name in ("fp32", "bf16"):
        return name
    raise UserError(f"precision must be 'auto', 'fp32' or 'bf16', got {name!r}")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    # Deterministic cuBLAS needs this set before the first CUDA matmul; harmless on CPU.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    # warn_only: an op without a deterministic variant should not abort a long run.
    set_deterministic(True)


def set_deterministic(mode: bool) -> None:
    """``torch.use_deterministic_algorithms(mode, warn_only=True)`` for eager torch.

    The public call also sets torch.compile's inductor flag, and importing that config pulls in
    torch._dynamo and torch._inductor: about 2 s of every stage's start-up. The project never
    compiles, so set the eager flag alone where torch exposes it. New tensors are not filled
    with NaN (``torch.utils.deterministic.fill_uninitialized_memory``).
    """
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:  # a torch without the private setter: pay the import
        torch.use_deterministic_algorithms(mode, warn_only=True)
    else:
        setter(mode, warn_only=True)
    # Deterministic mode also fills every new tensor with NaN, a debugging aid against reading
    # uninitialised memory that changes no result of a kernel that does not: 3-8% of a ResNet18
    # training step on 2 CPU cores (each activation and gradient written twice). The kernels
    # stay deterministic without it.
    torch.utils.deterministic.fill_uninitialized_memory = False


def _epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed for one epoch; independent of every other (seed, epoch)."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return int(state >> np.uint64(1))


def augment_batch(x: torch.Tensor, generator: torch.Generator, max_shift: int = 8) -> torch.Tensor:
    """Random horizontal flip and random shift of up to ``max_shift`` px (zero padded), per sample.

    x: (B, C, H, W) on any device; returns a new channels_last tensor of the same shape and
    dtype. Zero padding is the channel mean after normalisation. Randomness comes only from
    ``generator`` (a CPU generator), so the same generator state gives the same augmentation on
    CPU and CUDA.
    """
    b, c, h, w = x.shape
    flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
    shifts = torch.randint(-max_shift, max_shift + 1, (2, b), generator=generator).to(x.device)
    p = max_shift
    # Worked in NHWC (a view of the conv nets' channels_last batches), every copy below moves
    # whole pixel rows: 2-3x faster than gathering single values along H and W.
    nhwc = x.permute(0, 2, 3, 1)
    nhwc = torch.where(flip[:, None, None, None], nhwc.flip(2), nhwc)
    padded = F.pad(nhwc, (0, 0, p, p, p, p))  # (B, H + 2p, W + 2p, C)
    # Output pixel (i, j) of sample n reads padded[n, i + p - dy, j + p - dx]: rows by one
    # advanced index, then each sample's columns as one of its 2p + 1 windows of the row.
    batch = torch.arange(b, device=x.device)
    rows = torch.arange(h, device=x.device)[None, :] + (p - shifts[0])[:, None]  # (B, H)
    shifted = padded[batch[:, None], rows].flatten(2)  # (B, H, (W + 2p) C)
    windows = shifted.unfold(2, w * c, c)  # (B, H, 2p + 1, W C), a view
    out = windows[batch, :, p - shifts[1]]  # (B, H, W C)
    return out.view(b, h, w, c).permute(0, 3, 1, 2)


@dataclass
class EpochStats:
    """Metrics of one epoch. Train metrics are running means over the epoch's batches."""

    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    val_loss: float | None  # None when fit had no validation set
    val_acc: float | None
    seconds: float | None  # None: replayed from another run's record, not trained by this one
    lr: float  # learning rate of the first param group during this epoch


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        # Pinned memory makes the host->device copy asynchronous, overlapping it with compute.
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _check_pair(name: str, pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = pair
    if len(x) != len(y):
        raise ValueError(f"{name}: {len(x)} inputs but {len(y)} labels")
    if len(x) == 0:
        raise ValueError(f"{name}: no samples")


def fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor] | None,
    *,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    batch_size: int,
    device: torch.device | str,
    seed: int,
    start_epoch: int = 0,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    augment: bool = False,
    callbacks: Sequence[Callback] = (),
    desc: str = "train",
    progress: bool = True,
    precision: str = "fp32",
) -> list[EpochStats]:
    """Train ``model`` with cross-entropy for epochs ``start_epoch + 1 .. epochs``.

    Args:
        train: inputs (N, ...) float32 (or already bfloat16 in bf16: the cast ``fit`` would
            make) and labels (N,) int64, on the CPU or already on ``device``.
        val: the same for validation, or None. Evaluated once at the end of every epoch; the
            caller reports the last epoch's numbers (no best-epoch selection on validation).
        optimizer: built by the caller over ``model``'s parameters (create it after moving the
            model to ``device``).
        epochs: the total epoch budget, also when resuming (then pass ``start_epoch`` too).
        seed: shuffle/augmentation/dropout randomness of epoch e is seeded from (seed, e).
        scheduler: stepped once per epoch, before the callbacks (so a checkpoint written by a
            callback holds the scheduler state the next epoch starts from).
        callbacks: called in order after each epoch's validation with (stats, model).
        precision: ``fp32`` or ``bf16`` (``resolve_precision``): bf16 autocasts the training
            forward pass and loss (weights, Adam's state and gradients stay float32), and the
            validation of every epoch but the last. The last epoch's validation, and everything
            scored or pruned after ``fit``, runs in float32.
            In bf16 the training inputs are cast once, up front, which assumes the model's
            first operation on them is a conv or linear layer (autocast casts there anyway).

    Returns:
        One EpochStats per epoch trained (empty if ``start_epoch >= epochs``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    _check_pair("train", train)
    if val is not None:
        _check_pair("val", val)
    if precision == "fp32" and train[0].dtype == torch.bfloat16:
        raise ValueError("bfloat16 training inputs need precision='bf16'")
    device = torch.device(device)
    model.to(device)
    x_train, y_train = train
    n = len(x_train)
    # A model may offer a faster layout of its inputs in bf16 on the CPU (the CNN: its first
    # layer's pixel blocks). Augmentation works on images, so not for training then.
    relayout = getattr(model, "bf16_inputs", None) if device.type == "cpu" else None
    if precision == "bf16" and x_train.is_floating_point():
        # Autocast casts each batch to bf16 at the model's first conv or linear layer anyway
        # (every model here starts with one), so casting the training set once gives the same
        # bits, saves that cast every step and halves the bytes each batch gather moves: 2-4%
        # of a CNN epoch on 2 CPU cores. The caller's float32 inputs stay for scoring.
        if relayout is not None and not augment:
            x_train = relayout(x_train)
        else:
            x_train = x_train.to(torch.bfloat16)
    # The inputs of the epochs validated in bf16 (all but the last), when laid out otherwise.
    x_val_bf16 = None
    if (
        precision == "bf16"
        and val is not None
        and relayout is not None
        and start_epoch + 1 < epochs
    ):
        x_val_bf16 = relayout(val[0])
    history: list[EpochStats] = []
    # On the CPU, gather each shuffled batch into one reused buffer: a fresh multi-MB tensor per
    # batch costs page faults worth ~4% of a step. Safe because the previous step's graph (which
    # saved the batch for backward) is freed by then.
    batch_buffer = None
    if device.type == "cpu" and x_train.device.type == "cpu" and not x_train.requires_grad:
        rows = min(batch_size, n)
        # Images (N, C, H, W) are gathered into channels_last, the conv nets' layout (no copy in
        # the model's forward); index_select writes into the buffer's strides.
        layout = torch.channels_last if x_train.dim() == 4 else torch.contiguous_format
        batch_buffer = torch.empty(
            (rows, *x_train.shape[1:]), dtype=x_train.dtype, memory_format=layout
        )

    bar = tqdm(total=epochs, initial=start_epoch, desc=desc, unit="epoch", disable=not progress)
    for epoch in range(start_epoch + 1, epochs + 1):
        start = time.perf_counter()
        lr = float(optimizer.param_groups[0]["lr"])
        epoch_seed = _epoch_seed(seed, epoch)
        # Dropout etc. replay identically on resume. On the CPU, only the CPU generator:
        # torch.manual_seed also queues a seeding call, with its formatted stack, for each GPU
        # backend not yet initialised (CUDA, XPU, MTIA), 7% of train_mlp's profile.
        if device.type == "cpu":
            torch.default_generator.manual_seed(epoch_seed)
        else:
            torch.manual_seed(epoch_seed)
        generator = torch.Generator().manual_seed(epoch_seed)
        order = torch.randperm(n, generator=generator)  # CPU indices also index CUDA tensors

        model.train()
        # Accumulated on-device and read once per epoch: a per-batch .item() would force a
        # host sync every step.
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        for idx in order.split(batch_size):
            if batch_buffer is not None:
                inputs = torch.index_select(x_train, 0, idx, out=batch_buffer[: len(idx)])
            else:
                inputs = _to_device(x_train[idx], device)
            targets = _to_device(y_train[idx], device)
            if augment:
                inputs = augment_batch(inputs, generator)
            with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
                logits = model(inputs)
                loss = F.cross_entropy(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.detach().argmax(1) == targets).sum()
        train_loss = loss_sum.item() / n
        train_acc = correct.item() / n

        val_loss = val_acc = None
        if val is not None:
            # The curve's points before the last in the training precision: in float32 they
            # were 15% of a ResNet18 epoch (bf16 halves that). The last epoch's in float32, as
            # the caller scores the model, so the curve ends on the reported numbers.
            in_bf16 = precision == "bf16" and epoch < epochs
            x_val = x_val_bf16 if in_bf16 and x_val_bf16 is not None else val[0]
            with torch.autocast(device.type, torch.bfloat16, enabled=in_bf16):
                val_loss, val_acc = evaluate(
                    model,
                    x_val,
                    val[1],
                    batch_size=eval_batch_size(x_val, at_least=batch_size),
                    device=device,
                )  # restores train mode

        if scheduler is not None:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(train_loss if val_loss is None else val_loss)
            else:
                scheduler.step()

        stats = EpochStats(
            epoch=epoch,
            train_loss=train_loss,
            train_acc=train_acc,
            val_loss=val_loss,
            val_acc=val_acc,
            seconds=time.perf_counter() - start,
            lr=lr,
        )
        history.append(stats)
        postfix = {"loss": f"{train_loss:.4f}", "acc": f"{train_acc:.3f}"}
        if val_acc is not None:
            postfix["val_acc"] = f"{val_acc:.3f}"
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)
        for callback in callbacks:
            callback(stats, model)
    bar.close()
    return history


# Bytes of inputs per inference batch. Activations peak at a multiple of it (a ResNet's first
# conv output is ~5x its 224 px input): 256 ResNet images at once held ~2 GB for one layer.
EVAL_BATCH_BYTES = 16 << 20


def eval_batch_size(x: torch.Tensor, at_least: int = 1, at_most: int = 256) -> int:
    """Rows of ``x`` (N, ...) per inference batch: ~``EVAL_BATCH_BYTES`` of inputs, within
    [``at_least``, ``at_most``]."""
    per_row = max(1, x[0].numel() * x.element_size()) if len(x) else 1
    return max(at_least, min(at_most, EVAL_BATCH_BYTES // per_row))


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int | None = None,
    device: torch.device | str,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on (x (N, ...), y (N,)), in eval mode;
    ``batch_size`` defaults to ``eval_batch_size(x)``."""
    device = torch.device(device)
    batch_size = batch_size or eval_batch_size(x)
    was_training = model.training
    model.to(device).eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            inputs = _to_device(x[start : start + batch_size], device)
            targets = _to_device(y[start : start + batch_size], device)
            logits = model(inputs)
            loss_sum += F.cross_entropy(logits, targets, reduction="sum").double()
            correct += (logits.argmax(1) == targets).sum()
    model.train(was_training)
    return loss_sum.item() / len(x), correct.item() / len(x)


def predict_proba(
    model: nn.Module,
    x: torch.Tensor,
    *,
    rows: np.ndarray | torch.Tensor | None = None,
    batch_size: int | None = None,
    device: torch.device | str,
) -> np.ndarray:
    """Softmax class probabilities (M, n_classes) float32, in eval mode, for inputs x (N, ...)
    (M = N), or with ``rows`` (M,) for ``x[rows]``, gathered one batch at a time: the same
    batches and bits, without a whole copy of the rows (325 MB for a full-size fold's training
    images at 224 px). ``batch_size`` defaults to ``eval_batch_size(x)``."""
    device = torch.device(device)
    batch_size = batch_size or eval_batch_size(x)
    index = None if rows is None else torch.as_tensor(rows, dtype=torch.long)
    was_training = model.training
    model.to(device).eval()
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(x) if index is None else len(index), batch_size):
            end = start + batch_size
            part = x[start:end] if index is None else x[index[start:end]]  # keeps the layout
            logits = model(_to_device(part, device))
            chunks.append(torch.softmax(logits.float(), dim=1).cpu())
    model.train(was_training)
    if not chunks:
        raise ValueError("predict_proba needs at least one input")
    return torch.cat(chunks).numpy()


def adam(model: nn.Module, lr: float, state: dict | None = None) -> torch.optim.Adam:
    # fused: one kernel over all parameters; the per-tensor loop cost 4.7 ms a step on the
    # paper's CNN (a tenth of its training time on the sample), fused 0.75 ms.
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    if state is not None:
        opt.load_state_dict(state)
    return opt
