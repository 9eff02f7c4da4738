"""PyTorch's CPU Dense through oneDNN equals `torch.nn.functional.linear`."""

from unittest import mock

import keras
import numpy as np
import pytest

from keras_superclass.layers.fused_dense import Dense
from keras_superclass.layers.xla_cpu_forms import forced_kernels

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="oneDNN's linear is PyTorch's path; jax and TensorFlow never "
    "take it.",
)


def _inputs(*shape, seed=0):
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float32)


def _assert_tracks_float32(ours, inputs, theirs, wide, upstream, tol, grad_tol):
    """bf16 `ours` of `inputs` against float32 `theirs` of the same values
    (`wide`) rounded to bf16: outputs to `tol` (rtol, atol), then the
    gradients for `upstream` to `grad_tol`."""
    import torch

    bf16 = torch.bfloat16
    assert ours.dtype == bf16
    np.testing.assert_allclose(
        ours.detach().float(),
        theirs.detach().to(bf16).float(),
        rtol=tol[0],
        atol=tol[1],
    )
    ours_grads = torch.autograd.grad(ours, inputs, upstream)
    theirs_grads = torch.autograd.grad(theirs, wide, upstream.float())
    for a, c in zip(ours_grads, theirs_grads):
        assert a.dtype == bf16 and a.shape == c.shape
        np.testing.assert_allclose(
            a.float(), c.to(bf16).float(), rtol=grad_tol, atol=grad_tol
        )


def test_onednn_linear_matches_torch_values_and_gradients():
    import torch

    from keras_superclass.layers.torch_linear import onednn_linear

    for bias in (True, False):
        x = _inputs(3, 5, 7).requires_grad_()
        weight = _inputs(4, 7, seed=1).requires_grad_()
        b = _inputs(4, seed=2).requires_grad_() if bias else None
        upstream = _inputs(3, 5, 4, seed=3)
        ours = onednn_linear(x, weight, b)
        theirs = torch.nn.functional.linear(x, weight, b)
        np.testing.assert_allclose(
            ours.detach(), theirs.detach(), rtol=1e-5, atol=1e-5
        )
        params = [x, weight] + ([b] if bias else [])
        ours_grads = torch.autograd.grad(ours, params, upstream)
        theirs_grads = torch.autograd.grad(theirs, params, upstream)
        for a, c in zip(ours_grads, theirs_grads):
            assert a.shape == c.shape
            np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)


def test_onednn_linear_has_a_second_derivative():
    import torch

    from keras_superclass.layers.torch_linear import onednn_linear

    def grad_norm(linear):
        x = _inputs(6, 5).requires_grad_()
        weight = _inputs(3, 5, seed=1).requires_grad_()
        y = torch.tanh(linear(x, weight, None)).sum()
        (d_x,) = torch.autograd.grad(y, x, create_graph=True)
        (dd_weight,) = torch.autograd.grad(d_x.square().sum(), weight)
        return dd_weight

    np.testing.assert_allclose(
        grad_norm(onednn_linear),
        grad_norm(torch.nn.functional.linear),
        rtol=1e-4,
        atol=1e-5,
    )


def test_dense_takes_onednn_when_chosen_and_mkl_otherwise():
    import torch

    layer = Dense(4, activation="relu")
    x = _inputs(2, 3, 7)
    layer.build(x.shape)
    results = {}
    for native in (True, False):
        with forced_kernels(native):
            y = layer(x)
        kernel_grad = torch.autograd.grad(y.sum(), layer.kernel.value)[0]
        names = []
        node = y.grad_fn
        while node is not None and len(names) < 4:
            names.append(type(node).__name__)
            node = node.next_functions[0][0] if node.next_functions else None
        results[native] = (y.detach(), kernel_grad, names)
    assert not any("OneDNN" in n for n in results[True][2])
    assert any("OneDNN" in n for n in results[False][2])
    np.testing.assert_allclose(results[False][0], results[True][0], rtol=1e-5)
    np.testing.assert_allclose(
        results[False][1], results[True][1], rtol=1e-5, atol=1e-6
    )


def test_onednn_is_not_used_for_bfloat16_or_when_disabled():
    import torch

    from keras_superclass.layers.torch_linear import onednn_is_faster
    from keras_superclass.layers.torch_linear import use_onednn

    assert isinstance(onednn_is_faster(), bool)  # measured once, cached
    with forced_kernels(False):
        assert use_onednn(_inputs(2, 3))
        assert not use_onednn(_inputs(2, 3).to(torch.bfloat16))
        torch.backends.mkldnn.enabled = False  # a user's switch
        try:
            assert not use_onednn(_inputs(2, 3))
        finally:
            torch.backends.mkldnn.enabled = True


def test_dense_under_torch_compile_takes_pytorchs_own_linear():
    # `model.compile(jit_compile=True)` runs the step through
    # torch.compile, which picks its own kernels: the layer must trace.
    import torch

    layer = Dense(4)
    x = _inputs(5, 7)
    layer.build(x.shape)
    eager = layer(x)
    with forced_kernels(False):  # oneDNN outside compilation
        compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)(x)
    np.testing.assert_allclose(
        compiled.detach(), eager.detach(), rtol=1e-5, atol=1e-6
    )


def test_bfloat16_linear_in_float32_matches_float32_products():
    # Where PyTorch has no bf16 kernels: the bf16 operands multiplied in
    # float32 and rounded once, forward and backward, keeping bf16 copies.
    import torch

    from keras_superclass.layers.torch_linear import linear

    bf16 = torch.bfloat16
    for bias in (True, False):
        x = _inputs(3, 5, 7).to(bf16).requires_grad_()
        weight = _inputs(4, 7, seed=1).to(bf16).requires_grad_()
        b = _inputs(4, seed=2).to(bf16).requires_grad_() if bias else None
        upstream = _inputs(3, 5, 4, seed=3).to(bf16)
        with forced_kernels(False):
            ours = linear(x, weight, b)
        assert type(ours.grad_fn).__name__ == "Float32LinearBackward"
        assert [t.dtype for t in ours.grad_fn.saved_tensors] == [bf16, bf16]
        params = [x, weight] + ([b] if bias else [])
        wide = [p.detach().float().requires_grad_() for p in params]
        theirs = torch.nn.functional.linear(*wide[:2], *wide[2:])
        # To bf16's rounding (2 ** -8).
        tolerances = (8e-3, 1e-3), 1e-2
        _assert_tracks_float32(
            ours, params, theirs, wide, upstream, *tolerances
        )


def test_patch_projection_takes_the_same_float32_products():
    import torch

    from keras_superclass.layers.fused_dense import project

    x = _inputs(2, 3, 3, 12).to(torch.bfloat16).requires_grad_()
    kernel = _inputs(12, 5, seed=1).to(torch.bfloat16)
    with forced_kernels(False):
        ours = project(x, kernel)
    assert type(ours.grad_fn).__name__ == "Float32LinearBackward"
    with forced_kernels(True):
        native = project(x, kernel)
    assert "Float32" not in type(native.grad_fn).__name__
    np.testing.assert_allclose(
        ours.detach().float(), native.detach().float(), rtol=2e-2, atol=2e-2
    )


def _dense_path(name):
    """A PyTorch path that computes a Dense kernel's gradient in its own
    backward: `function(x, kernel) -> outputs`, and the float32 rows its
    Dense multiplies, `dense_rows(x)`."""
    import torch

    from keras_superclass.layers.gelu_dense import _torch_gelu_dense
    from keras_superclass.layers.norm_dense import _torch_norm_dense
    from keras_superclass.layers.torch_linear import linear

    def norm_dense(x, kernel):
        ones, zeros = torch.ones(x.shape[-1]), torch.zeros(x.shape[-1])
        bias = torch.zeros(kernel.shape[1])
        return _torch_norm_dense(x, ones, zeros, kernel, bias, 1e-6)

    def gelu_dense(x, kernel):
        return _torch_gelu_dense(x, kernel, torch.zeros(kernel.shape[1]))

    return {
        "linear": (lambda x, kernel: linear(x, kernel.T), torch.Tensor.float),
        "gelu_dense": (
            gelu_dense,
            lambda x: torch.nn.functional.gelu(x.float()),
        ),
        "norm_dense": (
            norm_dense,
            lambda x: torch.nn.functional.layer_norm(
                x.float(), [x.shape[-1]], eps=1e-6
            ),
        ),
    }[name]


@pytest.mark.parametrize("name", ["linear", "gelu_dense", "norm_dense"])
@pytest.mark.parametrize(
    "dtype, native",
    [
        ("float32", True),  # MKL
        ("float32", False),  # oneDNN
        ("bfloat16", False),  # bf16 products in float32
    ],
)
def test_kernel_gradient_comes_back_in_the_kernels_layout(name, dtype, native):
    # A Dense passes `kernel.T`: its gradient comes back contiguous in the
    # kernel's layout, so accumulating it copies nothing (76 MB at S/16),
    # from every backward that computes one (`linear_gradients`).
    import torch

    dtype = getattr(torch, dtype)
    function, dense_rows = _dense_path(name)
    x = _inputs(6, 5).to(dtype)
    kernel = _inputs(5, 3, seed=1).to(dtype).requires_grad_()
    with forced_kernels(native):
        out = function(x, kernel)
    (d_kernel,) = torch.autograd.grad(out.float().sum(), [kernel])
    assert d_kernel.is_contiguous(), (name, dtype, native)
    np.testing.assert_allclose(
        d_kernel.float(),
        (dense_rows(x).T @ torch.ones(6, 3)).to(dtype).float(),
        rtol=1e-2 if dtype == torch.bfloat16 else 1e-5,
        atol=1e-5,
    )


def test_blocked_bfloat16_products_match_whole_float32_products():
    # Products above `_BLOCK` elements go in blocks: of rows and columns,
    # or of a wide reduction (the head's backward), with and without bias.
    import torch

    from keras_superclass.layers import torch_linear

    bf16 = torch.bfloat16
    shapes = [(64, 12, 40), (8, 200, 6), (9, 5, 300)]  # (rows, in, out)
    for (rows, features, outputs), bias in zip(shapes, (True, False, True)):
        x = _inputs(rows, features).to(bf16).requires_grad_()
        weight = _inputs(outputs, features, seed=1).to(bf16)
        weight.requires_grad_()
        b = _inputs(outputs, seed=2).to(bf16) if bias else None
        upstream = _inputs(rows, outputs, seed=3).to(bf16)
        results = []
        for block in (100, 2**21):  # blocks of 100 elements, then whole
            with (
                mock.patch.object(torch_linear, "_BLOCK", block),
                forced_kernels(False),
            ):
                out = torch_linear.linear(x, weight, b)
                grads = torch.autograd.grad(out, [x, weight], upstream)
            results.append([out, *grads])
        for blocked, whole in zip(*results):
            np.testing.assert_allclose(
                blocked.detach().float(),
                whole.detach().float(),
                rtol=1e-2,
                atol=1e-2,
            )


def test_bfloat16_attention_in_float32_matches_sdpa_in_float32():
    import torch

    from keras_superclass.layers.torch_linear import attention_in_float32

    bf16 = torch.bfloat16
    for causal in (False, True):
        qkv = [_inputs(2, 7, 3, 4, seed=i).to(bf16) for i in range(3)]
        qkv = [t.requires_grad_() for t in qkv]
        upstream = _inputs(2, 7, 3, 4, seed=5).to(bf16)
        ours = attention_in_float32(*qkv, causal=causal)
        assert ours.dtype == bf16 and ours.shape == (2, 7, 3, 4)
        saved = ours.grad_fn.saved_tensors
        assert [t.dtype for t in saved[:4]] == [bf16] * 4
        wide = [t.detach().float().requires_grad_() for t in qkv]
        theirs = torch.nn.functional.scaled_dot_product_attention(
            *(t.transpose(1, 2) for t in wide), is_causal=causal
        ).transpose(1, 2)
        tolerances = (1e-2, 1e-2), 3e-2
        _assert_tracks_float32(ours, qkv, theirs, wide, upstream, *tolerances)


def test_bfloat16_in_float32_only_where_pytorch_lacks_bf16_kernels():
    import torch

    from keras_superclass.layers.torch_linear import bf16_as_float32

    bf16 = _inputs(2, 3).to(torch.bfloat16)
    lacks = not torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert bf16_as_float32(bf16) == lacks
    assert not bf16_as_float32(_inputs(2, 3))
    with forced_kernels(False):
        assert bf16_as_float32(bf16)
    with forced_kernels(True):
        assert not bf16_as_float32(bf16)


def test_bfloat16_vit_step_in_float32_products_tracks_pytorchs_bf16():
    # A whole mixed_bfloat16 ViT task (Dense, fused MLP and norm, patch
    # embedding, SDPA): the float32-product path against PyTorch's own
    # bf16 kernels, same weights, same batch.
    import torch
    from test_superclass_model import V
    from test_superclass_model import tiny_task

    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, 32, 32, 3)).astype("float32")
    ids = rng.integers(0, V, size=(4, 6)).astype("int32")
    keras.config.set_dtype_policy("mixed_bfloat16")
    results = {}
    weights = None
    for native in (True, False):
        keras.utils.set_random_seed(0)
        task = tiny_task()
        weights = weights or task.get_weights()
        task.set_weights(weights)
        with forced_kernels(native):
            logits = task(images)
            loss = task.compute_loss(x=images, y=ids, y_pred=logits)
            names, attention_dtypes = set(), set()
            stack, seen = [logits.grad_fn], set()
            while stack:
                node = stack.pop()
                if node is None or node in seen:
                    continue
                seen.add(node)
                names.add(type(node).__name__)
                if "ScaledDotProduct" in type(node).__name__:
                    attention_dtypes.add(("sdpa", node._saved_query.dtype))
                if type(node).__name__ == "Float32AttentionBackward":
                    query = node.saved_tensors[0]
                    attention_dtypes.add(("float32 copies", query.dtype))
                stack.extend(n for n, _ in node.next_functions)
            grads = torch.autograd.grad(
                loss, [v.value for v in task.trainable_variables]
            )
        results[native] = (logits, loss, grads, names)
        # Attention in float32 where the products are, else SDPA in bf16;
        # bf16 tensors kept for backward either way.
        path = "sdpa" if native else "float32 copies"
        assert attention_dtypes == {(path, torch.bfloat16)}
    assert "Float32LinearBackward" in results[False][3]
    assert "Float32LinearBackward" not in results[True][3]
    logits, loss, grads, _ = results[False]
    assert logits.dtype == torch.bfloat16
    np.testing.assert_allclose(
        logits.detach().float(),
        results[True][0].detach().float(),
        rtol=5e-2,
        atol=5e-2,
    )
    np.testing.assert_allclose(
        float(loss.detach()), float(results[True][1].detach()), rtol=1e-2
    )
    for ours, theirs in zip(grads, results[True][2]):
        scale = float(theirs.float().abs().max()) + 1e-6
        np.testing.assert_allclose(
            ours.float() / scale, theirs.float() / scale, atol=5e-2
        )
