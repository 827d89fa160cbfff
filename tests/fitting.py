"""``fit`` as the unit tests call it: no progress bar, no validation, on the CPU, seed 0, unless a
test says otherwise. The tests then name only what they are about."""

from __future__ import annotations

import torch

from emoprune.training.loop import fit


def quiet_fit(
    model, train, val=None, *, optimizer, epochs, batch_size, device="cpu", seed=0, **kwargs
):
    """``fit(model, train, val, ...)`` with ``progress=False`` and the defaults above; returns
    its history."""
    return fit(
        model,
        train,
        val,
        optimizer=optimizer,
        epochs=epochs,
        batch_size=batch_size,
        device=device,
        seed=seed,
        progress=False,
        **kwargs,
    )


def assert_same_training_steps(ours, stock, x, *, bf16, optimizer, steps=2):
    """Train ``ours`` and ``stock`` (same weights, loaded here) side by side on ``x`` for
    ``steps`` steps of ``optimizer(params)``, in bf16 autocast or not; asserts that outputs,
    gradients and the final state_dicts (BatchNorm's statistics included) are equal bit for bit."""
    stock.load_state_dict(ours.state_dict())  # the same keys and shapes
    optimizers = [optimizer(m.parameters()) for m in (ours, stock)]
    for _ in range(steps):
        outs = []
        for model in (ours, stock):
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                out = model(x)
            out.float().square().mean().backward()
            outs.append(out.detach())
        assert torch.equal(*outs)
        for (name, a), b in zip(ours.named_parameters(), stock.parameters(), strict=True):
            assert torch.equal(a.grad, b.grad), name
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
    for (name, a), b in zip(ours.state_dict().items(), stock.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
