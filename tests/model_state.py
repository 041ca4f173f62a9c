"""What "the method left the model exactly as it was" means, for the tests of every module.

``snapshot(model)`` before a call, ``assert_untouched(model, before)`` after it: the same parameters
and buffers bit for bit, the same modules (types and bias slots: a canonizer that merges batch norm
must put everything back), the same mode and ``requires_grad`` flags, no ``.grad`` written and no
hook left behind.
"""
from __future__ import annotations

import torch
from torch import nn


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "types": [type(m) for m in model.modules()],
        "biases": [type(getattr(m, "bias", None)) for m in model.modules()],
    }


def assert_untouched(model: nn.Module, before: dict) -> None:
    after = model.state_dict()
    assert list(after) == list(before["state"])
    assert all(torch.equal(before["state"][k], after[k]) for k in after)
    assert [m.training for m in model.modules()] == before["training"]
    assert [p.requires_grad for p in model.parameters()] == before["requires_grad"]
    assert [type(m) for m in model.modules()] == before["types"]
    assert [type(getattr(m, "bias", None)) for m in model.modules()] == before["biases"]
    assert all(p.grad is None for p in model.parameters())
    for m in model.modules():
        assert not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks), type(m).__name__
