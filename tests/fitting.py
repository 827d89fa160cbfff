"""``fit`` as the unit tests call it: no progress bar, no validation, on the CPU, seed 0, unless a
test says otherwise. The tests then name only what they are about."""

from __future__ import annotations

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
