"""Quantised linear layers for CPU inference, on PyTorch's own int8/int4 kernels.

`QLinear` replaces an `nn.Linear` inside a Hugging Face model, so the model's own forward, genforge's
evaluation and classifiers run it unchanged, and the fast Llama decoder fuses it (`QLinear.fuse`).
Three schemes, all with one float scale per output channel (int8) or per group of inputs (int4):

- `int8-dynamic`: int8 weights x int8 activations quantised per call (fbgemm; VNNI int8 dot products).
  The fastest here (see docs/compress.md); its Python API (`torch.ao.quantization.quantize_dynamic`) is
  deprecated, the `quantized::linear_dynamic` op it calls is what we use directly.
- `int8`: weight-only int8 (`aten._weight_int8pack_mm`): float activations, int8 weights in memory.
- `int4`: weight-only 4-bit, asymmetric per group of `group_size` inputs (`aten._weight_int4pack_mm_for_cpu`).

The stored form (what `quantized.safetensors` holds) is plain and kernel-independent: int8 [out, in]
with fp32 scales [out]; or int4 as two nibbles per byte [out, in / 2] (low nibble = even input) with
fp32 (scale, zero) pairs [in / group, out, 2], dequantised as w = (q - 8) * scale + zero. Kernel-specific
packing happens at load time, so a saved model does not depend on one kernel's private layout.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

SCHEMES = ("int8-dynamic", "int8", "int4")
INT8_K_MULTIPLE = 16  # `_weight_int8pack_mm` needs in_features % 16 == 0 (QLinear pads the others)


@functools.cache
def compute_dtype() -> torch.dtype:
    """Activations of the weight-only kernels: bfloat16 where the CPU has native bf16 (AVX512-BF16, AMX).

    Measured here (Zen 4): with float32 activations `_weight_int8pack_mm` and the int4 kernel take a
    slow generic path, 10-25x slower than a float32 matmul; with bfloat16 they are 1.2-2x faster than it.
    """
    from genforge.train.engine import bf16_available

    return torch.bfloat16 if bf16_available(torch.device("cpu")) else torch.float32


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: (q int8 [rows, cols], scale fp32 [rows]) with w ~ q * scale."""
    w = w.detach().float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale[:, None]


def quantize_int4(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric int4 per group of inputs: (nibbles uint8 [out, in/2], scale/zero fp32 [in/group, out, 2]).

    q = round((w - min) / scale) in 0..15 with scale = (max - min) / 15, and zero = min + 8 * scale, so
    w ~ (q - 8) * scale + zero (the convention of the CPU int4 kernel).
    """
    w = w.detach().float()
    out, k = w.shape
    groups = w.reshape(out, k // group_size, group_size)
    low, high = groups.amin(dim=-1), groups.amax(dim=-1)
    scale = ((high - low) / 15.0).clamp(min=1e-12)
    q = torch.round((groups - low[..., None]) / scale[..., None]).clamp(0, 15).to(torch.uint8).reshape(out, k)
    zero = low + 8.0 * scale
    nibbles = q[:, 0::2] | (q[:, 1::2] << 4)
    return nibbles.contiguous(), torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()


def unpack_int4(nibbles: torch.Tensor) -> torch.Tensor:
    """[out, in/2] uint8 -> [out, in] int32 values 0..15."""
    out = torch.empty(nibbles.shape[0], nibbles.shape[1] * 2, dtype=torch.int32)
    out[:, 0::2] = (nibbles & 0xF).to(torch.int32)
    out[:, 1::2] = (nibbles >> 4).to(torch.int32)
    return out


def dequantize_int4(nibbles: torch.Tensor, scale_zero: torch.Tensor, group_size: int) -> torch.Tensor:
    q = unpack_int4(nibbles).float()
    out, k = q.shape
    scale, zero = scale_zero[..., 0].t(), scale_zero[..., 1].t()  # [out, groups]
    return ((q.reshape(out, k // group_size, group_size) - 8) * scale[..., None] + zero[..., None]).reshape(out, k)


def int4_group(in_features: int, wanted: int) -> int:
    """The int4 group size for a layer: `wanted` when it divides the inputs, else the largest one that does
    (0: none does, the layer stays int8)."""
    for g in (wanted, 256, 128, 64, 32):
        if g <= wanted and in_features % g == 0:
            return g
    return 0


class QLinear(nn.Module):
    """y = x W^T + b with W stored quantised (see the module docstring for the schemes and layouts).

    The weights are plain attributes, not buffers: a QLinear is rebuilt from its stored form
    (`stored()`), never loaded through `load_state_dict`, and it runs on the CPU only. The int8-dynamic
    scheme keeps only fbgemm's packed weights (unpacked on demand); int4 keeps the portable nibbles
    beside the kernel's packed copy (the CPU pack is a private blocked layout with no unpack op).
    """

    def __init__(self, scheme: str, qweight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None,
                 in_features: int, group_size: int = 0, tied: bool = False):
        super().__init__()
        if scheme not in SCHEMES:
            raise ValueError(f"unknown quantisation scheme {scheme!r} (known: {', '.join(SCHEMES)})")
        self.scheme, self.in_features, self.group_size = scheme, in_features, group_size
        self.out_features = qweight.shape[0]
        self.tied = tied  # computes with the input embedding's int8 rows: not parameters of its own
        # Fresh copies: tensors read from a safetensors file can sit at any byte offset, and the int8
        # kernel's blocked path (many rows) reads 64-byte aligned (it crashed on an unaligned weight).
        qweight = qweight.detach().clone(memory_format=torch.contiguous_format)
        scales = scales.detach().float().clone(memory_format=torch.contiguous_format)
        self.bias = None if bias is None else bias.detach().float().clone()
        if scheme == "int8-dynamic":
            zeros = torch.zeros(self.out_features, dtype=torch.long)
            with warnings.catch_warnings():  # "quantized tensor creation is deprecated": see the module docstring
                warnings.simplefilter("ignore")
                q = torch._make_per_channel_quantized_tensor(qweight, scales.double(), zeros, 0)
            self._packed = torch.ops.quantized.linear_prepack(q, self.bias)
        else:
            self._qweight, self._scales = qweight, scales
            dtype = compute_dtype()
            self._kernel_scales = scales.to(dtype)
            # `_weight_int8pack_mm` reads its inputs in blocks of 16: with in_features % 16 != 0 it returns
            # garbage (inf, 1e18) or crashes (seen with bfloat16 activations, e.g. a pruned FFN of 248). Such
            # a layer computes with zero-padded weights and inputs (zero columns add nothing).
            self._pad = (-in_features) % INT8_K_MULTIPLE if scheme == "int8" else 0
            if scheme == "int4":
                self._kernel_weight = torch.ops.aten._convert_weight_to_int4pack_for_cpu(unpack_int4(qweight), 1)
            else:
                self._kernel_weight = F.pad(qweight, (0, self._pad)) if self._pad else qweight

    @classmethod
    def from_linear(cls, linear: nn.Linear, scheme: str, group_size: int = 0) -> QLinear:
        weight = linear.weight.detach()
        q, s = quantize_int4(weight, group_size) if scheme == "int4" else quantize_int8(weight)
        return cls(scheme, q, s, linear.bias, linear.in_features, group_size)

    def stored(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(quantised weights, scales) in the portable stored form (see the module docstring)."""
        if self.scheme == "int8-dynamic":
            q, _ = torch.ops.quantized.linear_unpack(self._packed)
            return q.int_repr(), q.q_per_channel_scales().float()
        return self._qweight, self._scales

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape, dtype = x.shape, x.dtype
        x2 = x.reshape(-1, self.in_features)
        if self.scheme == "int8-dynamic":
            y = torch.ops.quantized.linear_dynamic(x2.float(), self._packed, False)
        else:
            x2 = x2.to(self._kernel_scales.dtype)
            if self._pad:
                x2 = F.pad(x2, (0, self._pad))
            if self.scheme == "int4":
                y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self._kernel_weight, self.group_size,
                                                               self._kernel_scales)
            else:
                y = torch.ops.aten._weight_int8pack_mm(x2, self._kernel_weight, self._kernel_scales)
            if self.bias is not None:
                y = y + self.bias.to(y.dtype)
        return y.reshape(*shape[:-1], self.out_features).to(dtype)

    def kernel(self, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
        """This layer as a plain function of [..., in] inputs of `dtype`, for the fast decoder's hot loop.

        For int8-dynamic on float32 inputs it is fbgemm's op itself (it takes any leading dims and adds the
        packed bias), without nn.Module's call machinery and the reshapes: measured on the `base` decoder
        (49 calls a step), a batch-1 int8 decode step went from 6.94 to 6.65 ms.
        """
        if self.scheme == "int8-dynamic" and dtype == torch.float32:
            packed = self._packed
            return lambda x: torch.ops.quantized.linear_dynamic(x, packed, False)
        return self.forward

    def dequantized(self) -> torch.Tensor:
        """The float weight [out, in] this layer computes with (for tests and error measurements)."""
        q, scales = self.stored()
        return dequantize_int4(q, scales, self.group_size) if self.scheme == "int4" else dequantize_int8(q, scales)

    def memory_bytes(self) -> int:
        """Bytes this layer's weights take in memory (for int4: the nibbles and the kernel's packed copy)."""
        if self.scheme == "int8-dynamic":  # fbgemm's packed int8 weights, a scale per output channel
            tensors = [torch.empty(self.out_features, self.in_features, dtype=torch.int8),
                       torch.empty(self.out_features)]
        else:
            tensors = [self._qweight, self._scales, self._kernel_scales]
            tensors += [self._kernel_weight] if self.scheme == "int4" or self._pad else []
        tensors += [] if self.bias is None else [self.bias]
        return sum(t.numel() * t.element_size() for t in tensors)

    @classmethod
    def fuse(cls, layers: tuple[QLinear, ...]) -> QLinear:
        """One layer computing the concatenated outputs of `layers` (the fast decoder's fused q/k/v, gate/up)."""
        if len(layers) == 1:
            return layers[0]
        first = layers[0]
        if any((m.scheme, m.group_size, m.in_features) != (first.scheme, first.group_size, first.in_features)
               for m in layers):
            raise ValueError("cannot fuse quantised layers of different schemes or shapes")
        stored = [m.stored() for m in layers]
        biases = [m.bias for m in layers]
        bias = None if any(b is None for b in biases) else torch.cat(biases)
        scales = torch.cat([s for _, s in stored], dim=1 if first.scheme == "int4" else 0)
        return cls(first.scheme, torch.cat([q for q, _ in stored]), scales, bias, first.in_features, first.group_size)

    def extra_repr(self) -> str:
        group = f", group_size={self.group_size}" if self.scheme == "int4" else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, scheme={self.scheme}{group}"
