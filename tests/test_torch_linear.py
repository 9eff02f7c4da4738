"""PyTorch's CPU Dense through oneDNN equals `torch.nn.functional.linear`."""

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
