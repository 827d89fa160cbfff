"""Training-loop benchmarks: fit's overhead over a bare loop, achieved vs peak GFLOP/s, ResNet18
throughput, and the frozen ResNet18's cached-feature head training vs the whole network.

Every number is the median of several repetitions measured in this process, with the compared
variants interleaved so that clock/thermal drift hits both alike.

    PYTHONPATH=src python benchmarks/bench_training.py [--smoke] [--device cuda]

On a GPU the data sits on the device and every timed region ends with a synchronize, so the
numbers are the GPU's, not the launch queue's.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import torch
from torch import nn

from emoprune.models.cnn import CNN
from emoprune.training.loop import adam, bf16_supported, fit, seed_everything

BATCH = 32


def _dense_layer_flops(model: nn.Module, in_size: int) -> list[tuple[int, bool, bool]]:
    """One (forward FLOPs, has trainable weights, input needs a gradient) per conv / linear call
    of a forward pass on one ``in_size`` image, FLOPs from the output shapes (2 per multiply-add):
    conv: 2 * Cin/groups * k*k * Cout * Hout * Wout;  linear: 2 * in * out."""
    layers = []

    def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            cin = module.in_channels // module.groups
            flops = 2 * cin * kh * kw * output.shape[1] * output.shape[2] * output.shape[3]
        else:
            flops = 2 * module.in_features * module.out_features
        layers.append((flops, module.weight.requires_grad, inputs[0].requires_grad))

    modules = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_hook(hook) for m in modules]
    was_training = model.training
    try:
        # Grad mode on, so that requires_grad tells which inputs backward differentiates; eval
        # mode, so that batch norm accepts one image.
        with torch.enable_grad():
            model.eval()(torch.zeros(1, 3, in_size, in_size))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return layers


def forward_flops_per_image(model: nn.Module, in_size: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of one forward pass, from the conv/linear output shapes.
    Activations, pooling and biases are ignored (a few % at most)."""
    return sum(flops for flops, _, _ in _dense_layer_flops(model, in_size))


def training_flops_per_image(model: nn.Module, in_size: int) -> int:
    """FLOPs of one training step per image: the forward pass, then backward's products, one per
    conv / linear layer for its weight gradient (where it has trainable weights) and one for its
    input gradient (where the input needs one: not the first layer, which sees the images).

    "3x forward" would overcount the paper's CNN by 15%: its 11x11 first layer is 40% of the
    forward FLOPs, and nothing differentiates the images.
    """
    return sum(
        flops * (1 + trainable + needs_grad)
        for flops, trainable, needs_grad in _dense_layer_flops(model, in_size)
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(step, reps: int, device: torch.device) -> float:
    step()  # warm-up: thread pool, allocator, oneDNN primitives, cuBLAS handle
    _sync(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(
    n: int = 2048, reps: int = 7, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> float:
    """Median torch.mm GFLOP/s for n x n in ``dtype``."""
    device = torch.device(device)
    if device.type == "cuda":
        n = max(n, 8192)  # a small product leaves most of a GPU idle
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    return 2 * n**3 / _median_seconds(lambda: torch.mm(a, b), reps, device) / 1e9


# ResNet18's 3x3 convolutions, (channels, side): its four stages, each with the same FLOPs.
CONV_PROBES = ((64, 56), (128, 28), (256, 14), (512, 7))


def conv_gflops(
    channels: int,
    side: int,
    batch: int = 16,
    reps: int = 7,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> float:
    """Median GFLOP/s of a 3x3 same-padded convolution, ``channels`` in and out, on a
    channels_last (batch, channels, side, side) input in ``dtype``."""
    device = torch.device(device)
    x = torch.randn(batch, channels, side, side, device=device).to(dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, channels, 3, 3, device=device).to(dtype)
    w = w.contiguous(memory_format=torch.channels_last)
    flops = 2 * batch * side * side * channels * channels * 9
    step = lambda: torch.nn.functional.conv2d(x, w, padding=1)  # noqa: E731
    return flops / _median_seconds(step, reps, device) / 1e9


class PeakRates(dict):
    """{"fp32" | "bf16": the machine's peak GFLOP/s in that precision on ``device``}, each
    measured when first read: a precision nothing ran in is never timed (without AVX512-BF16 or
    AMX bf16 is emulated, and timing it takes minutes).

    The peak is the fastest of torch.mm on n x n and ResNet18's four 3x3 convolutions (``probes``
    keeps each one's rate). torch.mm alone is not the machine's rate everywhere: on AMD CPUs its
    float32 product runs in MKL at 206 GFLOP/s where oneDNN's convolutions reach 564 (a 2-core
    AMD EPYC with AVX-512). A fraction of, or a floor at, the slower one would flatter the run.
    """

    def __init__(self, device: str = "cpu", reps: int = 11, n: int = 2048, batch: int = 16):
        super().__init__()
        self.device, self.reps, self.n, self.batch = device, reps, n, batch
        self.probes: dict[str, dict[str, float]] = {}

    def __missing__(self, precision: str) -> float:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
        probes = {"torch.mm": matmul_gflops(self.n, self.reps, self.device, dtype)}
        for channels, side in CONV_PROBES:
            probes[f"conv3x3 {channels}@{side}"] = conv_gflops(
                channels, side, self.batch, self.reps, self.device, dtype
            )
        self.probes[precision] = probes
        self[precision] = max(probes.values())
        return self[precision]

    def note(self, precision: str) -> str:
        """Where ``self[precision]`` (already measured) came from, for a row's note."""
        rates = ", ".join(f"{k} {v:.0f}" for k, v in self.probes[precision].items())
        return f"fastest of ({rates}) GFLOP/s"


def _peak_rows(peaks: PeakRates, precision: str, device: torch.device) -> list[dict]:
    """``matmul_<precision>_gflops`` (torch.mm, the issue's figure) and ``peak_<precision>_gflops``
    (the fastest probe: what the fractions and floors divide by)."""
    note = f"on {_where(device)}, median of {peaks.reps}"
    peak = peaks[precision]  # measures the probes if nothing has yet
    matmul = peaks.probes[precision]["torch.mm"]
    over = "" if precision == "fp32" else "; ratio = over float32 (about 1 where bf16 is emulated)"
    return [
        {
            "group": "training",
            "name": f"matmul_{precision}_gflops",
            "value": matmul,
            "unit": "GFLOP/s",
            "baseline": None if precision == "fp32" else peaks.probes["fp32"]["torch.mm"],
            "ratio": None if precision == "fp32" else matmul / peaks.probes["fp32"]["torch.mm"],
            "note": f"torch.mm {peaks.n} x {peaks.n} in {precision} {note}{over}",
        },
        {
            "group": "training",
            "name": f"peak_{precision}_gflops",
            "value": peak,
            "unit": "GFLOP/s",
            "baseline": matmul,
            "ratio": peak / matmul,
            "note": f"{peaks.note(precision)} {note}; ratio = over torch.mm",
        },
    ]


def _smoke_peaks(smoke: bool, device: str) -> PeakRates:
    # The smoke run checks that the rows are built; a 512 x 512 product is enough for that.
    return PeakRates(device, reps=3, n=512, batch=1) if smoke else PeakRates(device)


def _no_bf16_note(device: torch.device) -> str:
    return (
        f"no bf16 rows: {_where(device)} has no native bf16 (AVX512-BF16 or AMX), so "
        "precision auto trains in float32 here"
    )


def _bare_epoch(model, optimizer, batches, device: torch.device) -> float:
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    _sync(device)
    start = time.perf_counter()
    for x, y in batches:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
    _sync(device)
    return time.perf_counter() - start


def _fit_epoch(model, optimizer, data, device: torch.device, precision: str = "fp32") -> float:
    _sync(device)
    start = time.perf_counter()
    fit(
        model,
        data,
        None,
        optimizer=optimizer,
        epochs=1,
        batch_size=BATCH,
        device=device,
        seed=0,
        progress=False,
        precision=precision,
    )
    _sync(device)
    return time.perf_counter() - start


def _where(device: torch.device) -> str:
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)}"
    return f"CPU {torch.get_num_threads()} threads"


def resnet18_rows(
    smoke: bool, device: str = "cpu", peaks: PeakRates | None = None, bf16: bool | None = None
) -> list[dict]:
    """ResNet18 fine-tuning throughput (the finetune_resnet recipe): channels_last vs not in
    float32, and channels_last in bf16 autocast where ``bf16`` (default: where the device runs
    it natively), each as a fraction of the matmul peak for its precision."""
    from emoprune.models.resnet import build_resnet, make_optimizer_and_scheduler

    peaks = _smoke_peaks(smoke, device) if peaks is None else peaks
    device = torch.device(device)
    bf16 = bf16_supported(device) if bf16 is None else bf16
    n, batch, reps = (16, 8, 1) if smoke else (64, 16, 3)
    if device.type == "cuda" and not smoke:
        n, reps = 512, 5
    x = torch.randn(n, 3, 224, 224, device=device)
    y = torch.randint(0, 7, (n,), device=device)

    def rate(layout: str, precision: str) -> float:
        seed_everything(0)
        model, _ = build_resnet("resnet18", 7, "none", channels_last=layout == "channels_last")
        model.to(device)
        opt, _ = make_optimizer_and_scheduler(model)
        xs = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x
        if precision == "bf16":  # cast once, as fit does once per fold (see cnn_rows)
            xs = xs.to(torch.bfloat16)
        kw = dict(batch_size=batch, device=device, seed=0, progress=False, precision=precision)
        fit(model, (xs[:batch], y[:batch]), None, optimizer=opt, epochs=1, **kw)  # warm-up
        times = []
        for _ in range(reps):
            _sync(device)
            t0 = time.perf_counter()
            fit(model, (xs, y), None, optimizer=opt, epochs=1, **kw)
            _sync(device)
            times.append(time.perf_counter() - t0)
        return n / statistics.median(times)

    rates = {
        "channels_last": rate("channels_last", "fp32"),
        "contiguous": rate("contiguous", "fp32"),
    }
    if bf16:
        rates["bf16"] = rate("channels_last", "bf16")
    model, _ = build_resnet("resnet18", 7, "none")
    flops_train = training_flops_per_image(model, 224)
    note = f"resnet18 224px, SGD momentum, batch {batch}, N={n}, {_where(device)}, median of {reps}"
    if not bf16:
        note = f"{note}; {_no_bf16_note(device)}"
    rows = [
        {
            "group": "training",
            "name": "resnet18_train_images_per_s",
            "value": rates["channels_last"],
            "unit": "img/s",
            "baseline": rates["contiguous"],
            "ratio": rates["channels_last"] / rates["contiguous"],
            "note": f"{note}; channels_last (used by finetune_resnet) vs contiguous NCHW",
        },
    ]
    if bf16:
        rows.append(
            {
                "group": "training",
                "name": "resnet18_train_bf16_images_per_s",
                "value": rates["bf16"],
                "unit": "img/s",
                "baseline": rates["channels_last"],
                "ratio": rates["bf16"] / rates["channels_last"],
                "note": f"{note}; precision bf16, channels_last; ratio = over float32",
            }
        )
    for name, precision, ips in (
        ("resnet18_train_gflops", "fp32", rates["channels_last"]),
        ("resnet18_train_bf16_gflops", "bf16", rates.get("bf16")),
    ):
        if ips is None:
            continue
        achieved = ips * flops_train / 1e9
        rows.append(
            {
                "group": "training",
                "name": name,
                "value": achieved,
                "unit": "GFLOP/s",
                "baseline": peaks[precision],
                "ratio": achieved / peaks[precision],
                "note": f"{ips:.1f} img/s x {flops_train / 1e9:.2f} GFLOP/image (forward and "
                f"backward from the layer shapes); ratio = fraction of the {precision} peak",
            }
        )
    return rows


def frozen_resnet18_rows(smoke: bool, device: str = "cpu") -> list[dict]:
    """``freeze_backbone: true``: training the head on features computed once (the recipe now)
    vs running the whole frozen ResNet18 every epoch (the path before; its backbone in eval mode
    so both train the same head), plus the tutorial's variant with BN in train mode (timing only:
    its features depend on the batch, so it trains a different head).

    Each variant trains ``epochs`` epochs from the same seeded init, interleaved over ``reps``;
    s/epoch is the median of fit's per-epoch seconds (validation included, as fit reports it).
    """
    from emoprune.models.resnet import (
        backbone_features,
        build_resnet,
        make_optimizer_and_scheduler,
        resnet_head,
    )

    device = torch.device(device)
    n, side, batch, epochs, reps = (8, 32, 4, 2, 1) if smoke else (64, 224, 16, 3, 3)
    if device.type == "cuda" and not smoke:
        n = 512
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, side, side, generator=generator)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 7, (n,), generator=generator)
    train, val = torch.arange(0, n * 3 // 4), torch.arange(n * 3 // 4, n)  # a 4-fold split

    def train_head(model, head, data_train, data_val, n_epochs: int) -> list:
        opt, sched = make_optimizer_and_scheduler(head)  # the tutorial's recipe
        return fit(
            model,
            data_train,
            data_val,
            optimizer=opt,
            scheduler=sched,
            epochs=n_epochs,
            batch_size=batch,
            device=device,
            seed=0,
            progress=False,
        )

    def full(bn_train: bool, n_epochs: int = epochs):
        seed_everything(0)
        if bn_train:  # the old frozen path: requires_grad off, BN still in train mode
            model, _ = build_resnet("resnet18", 7, "none")
            for name, param in model.named_parameters():
                param.requires_grad_(name.startswith("fc."))
        else:
            model, _ = build_resnet("resnet18", 7, "none", freeze_backbone=True)
        model.to(device)
        history = train_head(model, model, (x[train], y[train]), (x[val], y[val]), n_epochs)
        return [h.seconds for h in history], 0.0, model.fc

    def cached(n_epochs: int = epochs):
        seed_everything(0)
        model, _ = build_resnet("resnet18", 7, "none", freeze_backbone=True)
        _sync(device)
        t0 = time.perf_counter()
        f_train = backbone_features(model, x, index=train, device=device)
        f_val = backbone_features(model, x, index=val, device=device)
        extract = time.perf_counter() - t0
        head = resnet_head(model)
        history = train_head(head, head, (f_train, y[train]), (f_val, y[val]), n_epochs)
        return [h.seconds for h in history], extract, head

    variants = {
        "full_eval": lambda n_epochs=epochs: full(False, n_epochs),
        "cached": cached,
        "full_train_bn": lambda n_epochs=epochs: full(True, n_epochs),
    }
    for variant in variants.values():  # warm-up: one untimed epoch each (oneDNN / cuDNN)
        variant(1)
    seconds = {k: [] for k in variants}
    extract, diff = [], 0.0
    for rep in range(reps):
        names = list(variants)
        names = names[rep % len(names) :] + names[: rep % len(names)]  # rotate who goes first
        heads = {}
        for name in names:
            epoch_s, extract_s, heads[name] = variants[name]()
            seconds[name] += epoch_s
            if name == "cached":
                extract.append(extract_s)
        diff = max(
            diff,
            *(
                (getattr(heads["cached"], p) - getattr(heads["full_eval"], p)).abs().max().item()
                for p in ("weight", "bias")
            ),
        )
    per_epoch = {k: statistics.median(v) for k, v in seconds.items()}
    extract_s = statistics.median(extract)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    common = (
        f"resnet18 {side}px frozen, {len(train)} train + {len(val)} val images, batch {batch}, "
        f"SGD momentum, {epochs} epochs x {reps} interleaved, {_where(device)}, load avg {load:.1f}"
    )
    # A 25-epoch fold (the recipe's default): the one-off extraction amortised over it.
    fold_ratio = 25 * per_epoch["full_eval"] / (extract_s + 25 * per_epoch["cached"])
    return [
        {
            "group": "training",
            "name": "frozen_resnet18_cached_epoch_s",
            "value": per_epoch["cached"],
            "unit": "s/epoch",
            "baseline": per_epoch["full_eval"],
            "ratio": per_epoch["full_eval"] / per_epoch["cached"],
            "note": f"{common}; ratio = speedup (baseline / value): head on cached features vs "
            f"the whole frozen network (BN eval) every epoch; a 25-epoch fold with the "
            f"extraction: {fold_ratio:.1f}x; target ratio >= 20",
        },
        {
            "group": "training",
            "name": "frozen_resnet18_feature_extraction_s",
            "value": extract_s,
            "unit": "s",
            "baseline": per_epoch["full_eval"],
            "ratio": extract_s / per_epoch["full_eval"],
            "note": f"{common}; once per fold (train + val images, inference mode); ratio = "
            "its cost in whole-network epochs",
        },
        {
            "group": "training",
            "name": "frozen_resnet18_train_bn_epoch_s",
            "value": per_epoch["full_train_bn"],
            "unit": "s/epoch",
            "baseline": per_epoch["full_eval"],
            "ratio": per_epoch["full_train_bn"] / per_epoch["full_eval"],
            "note": f"{common}; the old frozen path (tutorial: BN in train mode, not a fixed "
            f"extractor, so not comparable in results); cached is "
            f"{per_epoch['full_train_bn'] / per_epoch['cached']:.0f}x faster per epoch",
        },
        {
            "group": "training",
            "name": "frozen_resnet18_head_max_abs_diff",
            "value": diff,
            "unit": "",
            "baseline": None,
            "ratio": None,
            "note": f"{common}; max |head weight/bias difference| after {epochs} epochs, cached "
            "features vs the whole frozen network, same seed and batches; target < 1e-4",
        },
    ]


def run(smoke: bool = False, device: str = "cpu") -> list[dict]:
    peaks = _smoke_peaks(smoke, device)  # one measurement per precision for all the rows
    return (
        cnn_rows(smoke, device, peaks)
        + resnet18_rows(smoke, device, peaks)
        + frozen_resnet18_rows(smoke, device)
    )


def cnn_rows(
    smoke: bool, device: str = "cpu", peaks: PeakRates | None = None, bf16: bool | None = None
) -> list[dict]:
    """fit against a bare loop on the paper's CNN, and its GFLOP/s as a fraction of the matmul
    peak: in float32, and in bf16 autocast where ``bf16`` (default: where native)."""
    peaks = _smoke_peaks(smoke, device) if peaks is None else peaks
    device = torch.device(device)
    bf16 = bf16_supported(device) if bf16 is None else bf16
    n, reps = (64, 2) if smoke else (256, 9)
    if device.type == "cuda" and not smoke:
        n = 2048
    seed_everything(0)
    model = CNN().to(device)  # the defaults: 227 px, conv ReLU + FC sigmoid, (512, 128, 64)
    optimizer = adam(model, lr=1e-3)  # train_cnn's optimizer (fused Adam)
    # channels_last, as the stages' images are (models.inputs.to_tensor_images): fit then
    # gathers each batch with a plain row copy, not a transpose.
    x = torch.randn(n, 3, 227, 227, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 7, (n,), device=device)
    batches = [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, n, BATCH)]

    # Warm-up both paths (oneDNN primitive caches / cuDNN autotuning, Adam state allocation).
    _bare_epoch(model, optimizer, batches[:2], device)
    _fit_epoch(model, optimizer, (x[: 2 * BATCH], y[: 2 * BATCH]), device)
    bare, fitted = [], []
    for rep in range(reps):
        # Alternate which goes first so neither systematically gets the warmer machine.
        pair = [
            ("bare", lambda: _bare_epoch(model, optimizer, batches, device)),
            ("fit", lambda: _fit_epoch(model, optimizer, (x, y), device)),
        ]
        for name, step in pair if rep % 2 == 0 else pair[::-1]:
            (bare if name == "bare" else fitted).append(n / step())
    bare_ips, fit_ips = statistics.median(bare), statistics.median(fitted)
    flops_train = training_flops_per_image(CNN(), 227)
    achieved = fit_ips * flops_train / 1e9
    peak = peaks["fp32"]
    # Other processes on a small machine skew throughput (not the interleaved ratio as much).
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    common = (
        f"paper CNN 227px, batch {BATCH}, N={n} channels_last, fused Adam, {_where(device)}, "
        f"median of {reps}, load avg {load:.1f}"
    )
    rows = [
        {
            "group": "training",
            "name": "bare_loop_images_per_s",
            "value": bare_ips,
            "unit": "img/s",
            "baseline": None,
            "ratio": None,
            "note": common if bf16 else f"{common}; {_no_bf16_note(device)}",
        },
        {
            "group": "training",
            "name": "fit_images_per_s",
            "value": fit_ips,
            "unit": "img/s",
            "baseline": bare_ips,
            "ratio": fit_ips / bare_ips,
            "note": f"{common}; baseline = bare loop on the same tensors; target ratio >= 0.9",
        },
        *_peak_rows(peaks, "fp32", device),
        {
            "group": "training",
            "name": "cnn_train_gflops",
            "value": achieved,
            "unit": "GFLOP/s",
            "baseline": peak,
            "ratio": achieved / peak,
            "note": f"fit throughput x {flops_train / 1e6:.0f} MFLOP/image (forward and backward "
            "from the layer shapes); ratio = fraction of the float32 peak",
        },
    ]
    if not bf16:
        return rows
    # The same fit in bf16 autocast (precision: bf16), interleaved with nothing: its own median.
    # The inputs are cast once, and on the CPU rearranged into the first layer's pixel blocks,
    # as fit does once per fold for all its epochs; cast inside each one-epoch call here, they
    # would take a tenth of it (23 of 207 ms for 256 images, 2 cores).
    xb = model.bf16_inputs(x) if device.type == "cpu" else x.to(torch.bfloat16)
    _fit_epoch(model, optimizer, (xb[: 2 * BATCH], y[: 2 * BATCH]), device, "bf16")
    # As many runs as float32's (a second or so): the median of four moved between 0.33 and
    # 0.41 of the peak from one run of the benchmark to the next.
    bf16_ips = statistics.median(
        n / _fit_epoch(model, optimizer, (xb, y), device, "bf16") for _ in range(reps)
    )
    peak_bf16 = peaks["bf16"]
    achieved_bf16 = bf16_ips * flops_train / 1e9
    return rows + [
        *_peak_rows(peaks, "bf16", device),
        {
            "group": "training",
            "name": "cnn_train_bf16_gflops",
            "value": achieved_bf16,
            "unit": "GFLOP/s",
            "baseline": peak_bf16,
            "ratio": achieved_bf16 / peak_bf16,
            "note": f"fit with precision bf16: {bf16_ips:.0f} img/s, {bf16_ips / fit_ips:.2f}x "
            "float32's; ratio = fraction of the bf16 peak",
        },
    ]


if __name__ == "__main__":
    argv = sys.argv[1:]
    dev = argv[argv.index("--device") + 1] if "--device" in argv else "cpu"
    for row in run(smoke="--smoke" in argv, device=dev):
        ratio = "" if row["ratio"] is None else f"  ratio {row['ratio']:.3f}"
        print(f"{row['name']:<24} {row['value']:10.2f} {row['unit']:<8}{ratio}  ({row['note']})")
