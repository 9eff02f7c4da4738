"""Runs a tiny SuperClass training data-parallel and on one device.

Run as a script by tests/test_distribution_tf_torch.py (not a test module):

    KERAS_BACKEND=tensorflow python tests/distribution_runs.py OUT.json
    KERAS_BACKEND=torch torchrun --nproc_per_node=2 \
        tests/distribution_runs.py OUT.json

Both train 3 steps at global batch 8, data-parallel (2 replicas or 2
processes, 4 samples each) and on one device, and write to OUT.json the
logged losses and the largest relative differences of the weights and the
IDF statistics between the two runs.
"""

import json
import os
import sys

STEPS, GLOBAL_BATCH, VOCABULARY = 3, 8, 24


def data():
    import numpy as np

    rng = np.random.default_rng(0)
    n = STEPS * GLOBAL_BATCH
    x = rng.normal(size=(n, 16, 16, 3)).astype("float32")
    ids = rng.integers(0, VOCABULARY, size=(n, 5)).astype("int32")
    ids[:, 3:][rng.random((n, 2)) < 0.5] = -1  # some padding
    return x, ids


def build(run_eagerly=False):
    import keras

    from keras_superclass.models import SuperClassBackbone
    from keras_superclass.models import SuperClassClassifier

    keras.utils.set_random_seed(0)
    backbone = SuperClassBackbone(
        image_shape=(16, 16, 3),
        patch_size=8,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
    )
    model = SuperClassClassifier(backbone, vocabulary_size=VOCABULARY)
    # Warmup then cosine: the schedule's position matters too.
    model.compile(
        learning_rate=1e-2,
        warmup_steps=1,
        total_steps=4,
        metrics=None,
        run_eagerly=run_eagerly,
    )
    return model


def fit(model, x, ids, batch_size):
    import keras

    losses = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: losses.append(
            float(logs["loss"])
        )
    )
    model.fit(
        x,
        ids,
        batch_size=batch_size,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[record],
    )
    return losses


def state(model):
    import numpy as np

    weights = []
    for variable in model.weights:
        value = np.asarray(variable.numpy())
        if variable.path.endswith("attn/in_proj/bias"):
            # The key bias shifts every logit of a query equally, so its
            # gradient is 0 up to rounding noise, which Adam's g/sqrt(v)
            # turns into +-lr steps: compare the query and value biases.
            third = value.shape[0] // 3
            value = np.concatenate([value[:third], value[2 * third :]])
        weights.append(value)
    idf = model.idf_statistics
    return {
        "weights": weights,
        "cap_fq": np.asarray(idf.cap_fq.numpy() - idf.cap_fq_error.numpy()),
        "num_samples": float(idf.num_samples.numpy()),
    }


def compare(parallel, single):
    import numpy as np

    def relative(a, b):
        scale = max(float(np.max(np.abs(b))), 1e-30)
        return float(np.max(np.abs(a - b))) / scale

    weights = [
        relative(a, b)
        for a, b in zip(parallel["weights"], single["weights"], strict=True)
    ]
    return {
        "weights_rel": max(weights),
        "cap_fq_rel": relative(parallel["cap_fq"], single["cap_fq"]),
        "num_samples": [parallel["num_samples"], single["num_samples"]],
    }


def run_tensorflow(out):
    from keras_superclass.distribution import activate

    # What a config's `distribution: {kind: data, mesh_shape: [2]}` does.
    run = activate({"kind": "data", "mesh_shape": [2]})
    x, ids = data()
    # The reference eagerly: no graph to trace for 3 steps.
    model = build(run_eagerly=True)
    single_losses = fit(model, x, ids, GLOBAL_BATCH)
    single = state(model)
    with run:
        model = run.prepare_model(build())
    losses = fit(model, x, ids, GLOBAL_BATCH)  # Keras splits each batch
    result = compare(state(model), single)
    result.update(
        replicas=run.num_replicas,
        process_batch=run.process_batch_size(GLOBAL_BATCH),
        losses=losses,
        single_losses=single_losses,
    )
    write(out, result)


def run_torch(out):
    import torch.distributed as dist

    from keras_superclass.data.records import default_process_index_and_count
    from keras_superclass.distribution import activate
    from keras_superclass.distribution import torch_ddp

    # What a config's `distribution: {kind: data}` does under torchrun.
    run = activate({"kind": "data"})
    torch_ddp.BUCKET_BYTES = 4096  # several buckets even for this model
    rank, local = run.process_index, run.process_batch_size(GLOBAL_BATCH)
    x, ids = data()
    # This process's share of every global batch.
    rows = [
        i
        for i in range(STEPS * GLOBAL_BATCH)
        if (i % GLOBAL_BATCH) // local == rank
    ]
    with run:
        model = run.prepare_model(build())
    losses = fit(model, x[rows], ids[rows], local)
    parallel = state(model)
    reader_share = default_process_index_and_count()
    gathered = contrastive_parts(rank, run.num_replicas)
    dist.destroy_process_group()
    if rank != 0:
        return
    model = build()
    single_losses = fit(model, x, ids, GLOBAL_BATCH)
    result = compare(parallel, state(model))
    result.update(
        replicas=run.num_replicas,
        process_batch=local,
        reader_share=list(reader_share),
        losses=losses,
        single_losses=single_losses,
        contrastive=compare_contrastive(gathered, run.num_replicas),
    )
    write(out, result)


CONTRASTIVE_ROWS = 8


def contrastive_features():
    import numpy as np

    rng = np.random.default_rng(1)
    features = rng.normal(size=(2, CONTRASTIVE_ROWS, 6))
    features /= np.linalg.norm(features, axis=-1, keepdims=True)
    return features.astype("float32")


def contrastive_losses(image, text):
    """CLIP and SigLIP losses and their feature gradients (torch)."""
    import torch

    from keras_superclass.losses.contrastive_losses import clip_loss
    from keras_superclass.losses.contrastive_losses import siglip_loss

    out = {}
    losses = (("clip", clip_loss, None), ("siglip", siglip_loss, -1.0))
    for name, loss_fn, bias in losses:
        i = torch.tensor(image, requires_grad=True)
        t = torch.tensor(text, requires_grad=True)
        scale = torch.tensor(10.0)
        loss = loss_fn(
            i, t, scale, None if bias is None else torch.tensor(bias)
        )
        loss.backward()
        out[name] = [float(loss), i.grad.numpy(), t.grad.numpy()]
    return out


def contrastive_parts(rank, world):
    """This process's losses on its rows (features gathered with gradients
    from every process), collected on every process."""
    import torch.distributed as dist

    image, text = contrastive_features()
    local = CONTRASTIVE_ROWS // world
    rows = slice(rank * local, (rank + 1) * local)
    parts = [None] * world
    dist.all_gather_object(parts, contrastive_losses(image[rows], text[rows]))
    return parts


def compare_contrastive(parts, world):
    """Per loss: the relative gaps to one process on the global batch (the
    mean of the processes' losses; each process's feature gradients, which
    the gather's backward sums over the processes, are `world` times the
    global loss's)."""
    import numpy as np

    single = contrastive_losses(*contrastive_features())
    result = {}
    for name, (loss, image_grad, text_grad) in single.items():
        mean = np.mean([p[name][0] for p in parts])
        grads = [np.concatenate([p[name][k] for p in parts]) for k in (1, 2)]
        result[name] = {
            "loss_rel": abs(mean - loss) / abs(loss),
            "grad_rel": max(
                float(np.max(np.abs(g - world * e)) / np.max(np.abs(e)))
                for g, e in zip(grads, (image_grad, text_grad))
            ),
        }
    return result


def write(out, result):
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
    import keras

    if keras.backend.backend() == "tensorflow":
        run_tensorflow(sys.argv[1])
    else:
        run_torch(sys.argv[1])
