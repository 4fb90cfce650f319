"""Experiments kept apart from rnnkit's product: nothing in rnnkit imports them, and their
interfaces may change or go. `rnnkit.experimental.pallas`: dynamic_rnn's loops as per-step
Pallas kernels (slower than the fused path everywhere measured)."""
