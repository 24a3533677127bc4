"""The M2 dimension mixer: a GLU MLP whose two matrices are block-diagonal (Monarch)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from m2bert.config import M2BertConfig
from m2bert.model import kernel_switch
from m2bert.model.dropout import Dropout
from m2bert.model.monarch import BlockdiagLinear, monarch_glu


class MonarchMLP(nn.Module):
    """GELU(gate)·value → wo, then post-LayerNorm with the residual from the sequence mixer.

    ``gated_layers`` maps H → 2I without bias; the first I outputs are the gate, the last I
    the value (the original's split). With ``use_glu_mlp=False`` it is a plain GELU MLP.
    """

    def __init__(self, config: M2BertConfig) -> None:
        super().__init__()
        h, i = config.hidden_size, config.intermediate_size
        self.glu = config.use_glu_mlp
        self.use_monarch_glu = config.use_glu_mlp and config.use_monarch_mlp
        self.intermediate_size = i
        self.kernels = config.kernels
        if config.use_monarch_mlp:
            def linear(a: int, b: int, bias: bool = True) -> nn.Module:
                return BlockdiagLinear(a, b, nblocks=config.monarch_mlp_nblocks, bias=bias)
        else:
            linear = nn.Linear  # type: ignore[assignment]
        self.gated_layers = linear(h, 2 * i if self.glu else i, bias=False)
        self.wo = linear(i, h)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.norm = nn.LayerNorm(h, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_monarch_glu:
            use_triton = kernel_switch.use_triton(self.kernels, x.device, "monarch_glu")
            glu = kernel_switch.monarch_glu if use_triton else monarch_glu
            y = glu(x, self.gated_layers.weight, self.wo.weight, self.wo.bias, self.dropout.p, self.training)
            return self.norm(y + x)
        h = self.gated_layers(x)
        if self.glu:
            gate, value = h.split(self.intermediate_size, dim=-1)
            h = F.gelu(gate) * value
        else:
            h = F.gelu(h)
        h = self.wo(self.dropout(h))
        return self.norm(h + x)
