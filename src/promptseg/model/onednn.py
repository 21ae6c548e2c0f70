"""oneDNN's fused operations for CPU inference: a convolution or a linear layer with GELU applied
as its output is written (one pass over the features instead of two), through torch's internal
mkldnn ops, whose matrix products are also a little faster here than `F.linear`'s.

Used only where `usable` says so (CPU, fp32, no autograd, not traced or exported: ONNX has no such
ops). A torch build without them falls back to the plain ops for the rest of the process. Results
equal the plain ops' within float rounding (GELU is the exact, erf form in both)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

_STATE = {"ok": True}


def usable(x: torch.Tensor) -> bool:
    """Whether the fused ops can take `x` now."""
    return (_STATE["ok"] and x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and not torch.is_grad_enabled() and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export())


def disable() -> None:
    """This build of torch lacks the ops: the plain path from now on."""
    _STATE["ok"] = False


def conv_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding, stride, groups: int) -> torch.Tensor:
    """GELU(conv2d(x)) as one oneDNN convolution; raises where the op is missing (see `usable`)."""
    return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, list(padding), list(stride), [1, 1], groups,
                                                   "gelu", [None], "none")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool = False) -> torch.Tensor:
    """F.linear(x, weight, bias), then GELU when `gelu`: one oneDNN matrix product where usable,
    the plain ops elsewhere."""
    if usable(x):
        try:
            out = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), weight, bias,
                                                     "gelu" if gelu else "none", [None], "none")
            return out.view(*x.shape[:-1], out.shape[-1])
        except (RuntimeError, AttributeError):
            disable()
    y = F.linear(x, weight, bias)
    return F.gelu(y) if gelu else y
