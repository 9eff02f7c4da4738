"""PyTorch's float32 linear on a CPU through whichever library runs it
faster there: MKL (what `torch.nn.Linear` calls) or oneDNN.

PyTorch runs float32 matmuls on a CPU with MKL, whose kernels ran at less
than half the machine's speed on an AMD EPYC (162-194 GFLOP/s, where
PyTorch's oneDNN ran at 225-260 and TensorFlow's matmul at 413-423), while
oneDNN, which PyTorch also ships, reaches its AVX-512 kernels on any x86
CPU. So the choice is measured once per process on a ViT-sized product
(MKL kept unless oneDNN is clearly faster); on that EPYC oneDNN made the
whole S/16 training step 1.4x as fast (`benchmarks/README.md`). GPUs,
`torch.compile` and builds without oneDNN keep
`torch.nn.functional.linear`.

bfloat16 on a CPU where PyTorch has no bf16 matmul kernels (its oneDNN
reports no bf16 support: CPUs without AVX-512, e.g. AVX2-only ones) runs
PyTorch's generic fallback, 6-80x slower than its float32 products there:
(3,152 x 384) x (384 x 1,536) in 215 ms against 37 ms (3.0 s with its
bias, inside a step). There `linear` takes the bf16 operands as float32
(exact), multiplies in float32 and rounds the result to bf16, as a bf16
kernel accumulating in float32 does; backward keeps the bf16 operands
and does the same (`bf16_as_float32`; `benchmarks/README.md`, twentieth
pass: the bf16 S/16 step 27x as fast). The float32 copies are made a
block of at most 8 MiB at a time, and `attention_in_float32` runs the
attention the same way (twenty-first pass: the step's peak memory 300-450
MB lower).
"""

import functools
import time

from keras_superclass.layers.xla_cpu_forms import forced_choice

# oneDNN must beat MKL by this factor to be chosen: a tie keeps the
# library `torch.nn.Linear` uses.
_MARGIN = 0.9

# Elements (8 MiB of float32) in each block of a bf16 product taken in
# float32. Whole-matrix float32 copies and results (19-76 MB each at S/16)
# fragmented glibc's heap: a bf16 S/16 step peaked at 3,731-3,778 MB with
# them, 3,419-3,451 MB in 8 MiB blocks, about 3% slower
# (`benchmarks/README.md`, twenty-first pass).
_BLOCK = 2**21


def _eager_on_cpu(inputs, dtype):
    """Whether `inputs` is a CPU tensor of `dtype`, outside
    `torch.compile` (which picks its own kernels)."""
    import torch

    return (
        inputs.device.type == "cpu"
        and inputs.dtype == dtype
        and not torch.compiler.is_compiling()
    )


def use_onednn(inputs):
    """Whether `linear(inputs, ...)` runs through oneDNN: float32 CPU
    tensors, oneDNN built and enabled, and measured faster (or forced by
    `xla_cpu_forms.forced_kernels(False)`)."""
    import torch

    if not _eager_on_cpu(inputs, torch.float32):
        return False
    mkldnn = torch.backends.mkldnn
    if not (mkldnn.is_available() and mkldnn.enabled):
        return False
    forced = forced_choice()
    if forced is not None:
        return not forced  # forced native: MKL, as `nn.Linear`
    return onednn_is_faster()


@functools.cache
def onednn_is_faster(rows=1024, features=384, outputs=1536, repeats=5):
    """Times both libraries on one product (forward and both backward
    forms), alternating; oneDNN wins when its best is under `_MARGIN` of
    MKL's."""
    import torch

    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(rows, features, generator=generator)
        weight = torch.randn(outputs, features, generator=generator)
        grad = torch.randn(rows, outputs, generator=generator)

        def mkl():
            torch.nn.functional.linear(x, weight)
            grad @ weight
            grad.t() @ x

        def onednn():
            _linear(x, weight)
            _linear(grad, weight.t())
            _linear(grad.t(), x.t())

        best = {mkl: float("inf"), onednn: float("inf")}
        for _ in range(repeats + 1):  # the first round warms up both
            for run in best:
                start = time.perf_counter()
                run()
                best[run] = min(best[run], time.perf_counter() - start)
    return best[onednn] < _MARGIN * best[mkl]


def _linear(rows, weight, bias=None):
    import torch

    return torch.ops.mkldnn._linear_pointwise(
        rows, weight, bias, "none", [], ""
    )


def bf16_as_float32(inputs):
    """Whether bfloat16 products of `inputs` run in float32: bf16 CPU
    tensors where PyTorch has no bf16 matmul kernels, outside
    `torch.compile` (or forced by `xla_cpu_forms.forced_kernels(False)`;
    `True` keeps PyTorch's own)."""
    import torch

    if not _eager_on_cpu(inputs, torch.bfloat16):
        return False
    forced = forced_choice()
    if forced is not None:
        return not forced
    return not _has_bf16_kernels()


@functools.cache
def _has_bf16_kernels():
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True  # cannot tell: PyTorch's own kernels


def linear(inputs, weight, bias=None, onednn=None):
    """`torch.nn.functional.linear` on oneDNN where `use_onednn` chooses it
    (or as `onednn` says: a backward repeats its forward's choice), else on
    MKL (`F.linear`, as `nn.Linear`); bfloat16 in float32 where
    `bf16_as_float32` says."""
    import torch

    if bf16_as_float32(inputs):
        return _float32_function().apply(inputs, weight, bias)
    if onednn is None:
        onednn = use_onednn(inputs)
    if onednn:
        return onednn_linear(inputs, weight, bias)
    return torch.nn.functional.linear(inputs, weight, bias)


def onednn_linear(inputs, weight, bias=None):
    """`torch.nn.functional.linear` (`weight` is `(outputs, features)`)
    with the forward and both backward products on oneDNN."""
    return _function().apply(inputs, weight, bias)


@functools.cache
def _function():
    import torch

    class OneDNNLinear(torch.autograd.Function):
        @staticmethod
        def forward(ctx, inputs, weight, bias):
            ctx.save_for_backward(inputs, weight)
            ctx.has_bias = bias is not None
            rows = inputs.reshape(-1, inputs.shape[-1])
            outputs = _linear(rows, weight, bias)
            return outputs.reshape(*inputs.shape[:-1], weight.shape[0])

        @staticmethod
        def backward(ctx, grad):
            inputs, weight = ctx.saved_tensors
            grad_rows = grad.reshape(-1, grad.shape[-1])
            rows = inputs.reshape(-1, inputs.shape[-1])
            # Through `apply` again, so a second derivative also works.
            d_inputs, d_weight = linear_gradients(
                grad_rows,
                rows,
                weight,
                lambda a, b_t: OneDNNLinear.apply(a, b_t, None),
            )
            d_bias = grad_rows.sum(0) if ctx.has_bias else None
            return d_inputs.reshape(inputs.shape), d_weight, d_bias

    return OneDNNLinear


def linear_gradients(grad_rows, rows, weight, product=None, onednn=None):
    """The gradients of `linear(rows, weight)` for `grad_rows`: the
    inputs', `grad_rows @ weight`, and the weight's, `grad_rows.T @ rows`,
    laid out as `weight` is. Both products through `product(a, b_t)`
    (`a @ b_t.T`), or by default through `linear` on the kernels `onednn`
    names (a backward repeats its forward's choice).

    A Dense passes `kernel.T`, a column-major view: a gradient returned
    row-major is copied once more where it accumulates into the kernel
    (the S/16 head's: 76 MB more at a bf16 step's peak; `benchmarks/
    README.md`, twenty-first pass). Every Dense backward computes both
    through this function.

    Example:
    >>> import torch
    >>> kernel = torch.ones(4, 3)  # (features, outputs), as a Dense's
    >>> d_rows, d_weight = linear_gradients(
    ...     torch.ones(2, 3), torch.ones(2, 4), kernel.T,
    ...     lambda a, b_t: a @ b_t.T)
    >>> d_rows.shape, d_weight.shape, d_weight.T.is_contiguous()
    (torch.Size([2, 4]), torch.Size([3, 4]), True)
    """
    if product is None:
        product = functools.partial(linear, bias=None, onednn=onednn)
    d_rows = product(grad_rows, weight.t())
    if weight.stride(0) < weight.stride(1):  # column-major: `kernel.T`
        return d_rows, product(rows.t(), grad_rows.t()).t()
    return d_rows, product(grad_rows.t(), rows.t())


def _float32_linear(a, b_t, bias=None):
    """`linear` of float32 copies of `a`, `b_t` (and `bias`)."""
    a32, b32 = a.float(), b_t.float()
    bias32 = None if bias is None else bias.float()
    return linear(a32, b32, bias32, use_onednn(a32))


@functools.cache
def _float32_function():
    import torch

    def product(a, b_t, bias=None):
        # `a @ b_t.T (+ bias)` for 2-D bf16 `a`, `b_t`: float32 products
        # of blocks, each rounded into the bf16 result.
        (m, k), n = a.shape, b_t.shape[0]
        out = a.new_empty((m, n))
        if n * k > _BLOCK and k > n:  # a wide reduction: sum its blocks
            width = max(1, _BLOCK // max(m, n))
            total = None
            for i in range(0, k, width):
                part = _float32_linear(
                    a[:, i : i + width], b_t[:, i : i + width]
                )
                total = part if total is None else total.add_(part)
            if bias is not None:
                total.add_(bias.float())
            return out.copy_(total)
        cols = n if n * k <= _BLOCK else max(1, _BLOCK // k)
        for j in range(0, n, cols):
            # Converted once for all its row blocks (at most 8 MiB).
            b_block = b_t[j : j + cols].float()
            bias_block = None if bias is None else bias[j : j + cols].float()
            rows = max(1, _BLOCK // (k + b_block.shape[0]))
            for i in range(0, m, rows):
                out[i : i + rows, j : j + cols] = _float32_linear(
                    a[i : i + rows], b_block, bias_block
                )
        return out

    class Float32Linear(torch.autograd.Function):
        """`F.linear` of bf16 tensors computed in float32; keeps the bf16
        operands (not float32 copies) for backward."""

        @staticmethod
        def forward(ctx, inputs, weight, bias):
            ctx.save_for_backward(inputs, weight)
            ctx.bias_dtype = None if bias is None else bias.dtype
            rows = inputs.reshape(-1, inputs.shape[-1])
            outputs = product(rows, weight, bias)
            return outputs.reshape(*inputs.shape[:-1], weight.shape[0])

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, grad):
            inputs, weight = ctx.saved_tensors
            grad_rows = grad.reshape(-1, grad.shape[-1])
            rows = inputs.reshape(-1, inputs.shape[-1])
            d_inputs, d_weight = linear_gradients(
                grad_rows, rows, weight, product
            )
            d_weight = d_weight.to(weight.dtype)
            d_bias = None
            if ctx.bias_dtype is not None:
                d_bias = grad_rows.sum(0, dtype=torch.float32)
                d_bias = d_bias.to(ctx.bias_dtype)
            return d_inputs.reshape(inputs.shape), d_weight, d_bias

    return Float32Linear


def attention_in_float32(query, key, value, causal=False):
    """Self-attention of bf16 `(B, L, H, Dh)` tensors where
    `bf16_as_float32`: PyTorch's CPU flash kernel (what SDPA runs) on
    float32 copies, the output rounded to bf16. Backward keeps the bf16
    inputs and output, not float32 copies (S/16: 11 MB less a block).
    Returns `(B, L, H, Dh)`, as `ops.dot_product_attention`."""
    return _float32_attention().apply(query, key, value, bool(causal))


@functools.cache
def _float32_attention():
    import torch

    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    flash_backward = (
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
    )

    def heads(x):  # (B, L, H, Dh) -> float32 (B, H, L, Dh)
        return x.transpose(1, 2).float()

    class Float32Attention(torch.autograd.Function):
        @staticmethod
        def forward(ctx, query, key, value, causal):
            out, logsumexp = flash(
                heads(query), heads(key), heads(value), 0.0, causal
            )
            out = out.transpose(1, 2).to(
                query.dtype, memory_format=torch.contiguous_format
            )
            ctx.save_for_backward(query, key, value, out, logsumexp)
            ctx.causal = causal
            return out

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, d_out):
            query, key, value, out, logsumexp = ctx.saved_tensors
            grads = flash_backward(
                heads(d_out),
                heads(query),
                heads(key),
                heads(value),
                heads(out),
                logsumexp,
                0.0,
                ctx.causal,
            )
            return (*(g.transpose(1, 2).to(query.dtype) for g in grads), None)

    return Float32Attention
