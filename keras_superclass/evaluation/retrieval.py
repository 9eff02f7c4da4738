"""Image <-> text retrieval recall@K with an image-text model.

Image `i` and caption `i` of captioned shards are a pair; recall@K of
image -> text is the fraction of images whose own caption is among the K
captions closest to it (cosine similarity), and the other way round for
text -> image.
"""

import keras
import numpy as np
from keras import ops

from keras_superclass.evaluation.zero_shot import image_embeddings


def retrieval_recall(image_features, text_features, ks=(1, 5, 10)):
    """Recall@K both ways for paired `(N, D)` image and text features.

    The rank of a pair is the number of candidates scoring strictly
    higher than it (ties count in its favour). Features are compared by
    dot product: L2-normalise them for cosine similarity.

    Args:
        image_features: `(N, D)`; row `i` pairs with text row `i`.
        text_features: `(N, D)`.
        ks: the K of the reported recalls.

    Returns:
        `{"image_to_text_R@1": ..., "text_to_image_R@1": ..., ...}`.

    Example:
    >>> features = np.eye(3, dtype="float32")
    >>> recall = retrieval_recall(features, features[[0, 2, 1]], ks=(1,))
    >>> {k: round(v, 3) for k, v in recall.items()}
    {'image_to_text_R@1': 0.333, 'text_to_image_R@1': 0.333}
    """
    images = ops.convert_to_tensor(np.asarray(image_features, "float32"))
    texts = ops.convert_to_tensor(np.asarray(text_features, "float32"))
    if images.shape != texts.shape or len(images.shape) != 2:
        raise ValueError(
            f"Image and text features must be paired (N, D) arrays of the "
            f"same shape; got {tuple(images.shape)} and "
            f"{tuple(texts.shape)}."
        )
    scores = ops.matmul(images, ops.transpose(texts))  # (images, texts)
    positive = ops.diagonal(scores)
    # Candidates scoring strictly above the true pair, per query.
    rank_i2t = ops.sum(ops.cast(scores > positive[:, None], "int32"), axis=1)
    rank_t2i = ops.sum(ops.cast(scores > positive[None, :], "int32"), axis=0)
    rank_i2t = keras.ops.convert_to_numpy(rank_i2t)
    rank_t2i = keras.ops.convert_to_numpy(rank_t2i)
    result = {}
    for k in sorted(ks):
        result[f"image_to_text_R@{k}"] = float(np.mean(rank_i2t < k))
    for k in sorted(ks):
        result[f"text_to_image_R@{k}"] = float(np.mean(rank_t2i < k))
    return result


def caption_embeddings(model, data, batch_size=64, limit=None, verbose=False):
    """Paired `(image_features, text_features, captions)` of captioned
    shards (eval transform, in order), all L2-normalised.

    Args:
        model: an image-text model (`encode_images`, `encode_texts`,
            `preprocessor`).
        data: captioned TFRecord shards (glob, folder or list).
        batch_size: pairs per batch.
        limit: use only the first `limit` pairs.
        verbose: progress bar.
    """
    from keras_superclass.data import image_text_dataset

    preprocessor = model.preprocessor
    dataset = image_text_dataset(
        data,
        batch_size=batch_size,
        preprocessor=preprocessor,
        training=False,
        deterministic=True,
        drop_remainder=False,
        seed=0,
    )
    if limit:
        dataset = dataset.unbatch().take(int(limit)).batch(batch_size)
    image_features, token_ids = image_embeddings(model, dataset, verbose)
    # image_embeddings flattens the second element: restore the rows.
    token_ids = token_ids.reshape(image_features.shape[0], -1)
    text_features = keras.ops.convert_to_numpy(
        model.encode_texts(ops.convert_to_tensor(token_ids, "int32"))
    ).astype("float32")
    norm = np.linalg.norm(text_features, axis=-1, keepdims=True)
    return image_features, text_features / np.maximum(norm, 1e-12), token_ids


def evaluate_retrieval(
    model, data, ks=(1, 5, 10), batch_size=64, limit=None, verbose=False
):
    """Image <-> text recall@K of a model on captioned shards.

    Returns:
        `retrieval_recall`'s dict plus `num_pairs`.
    """
    images, texts, _ = caption_embeddings(
        model, data, batch_size=batch_size, limit=limit, verbose=verbose
    )
    result = retrieval_recall(images, texts, ks)
    result["num_pairs"] = int(images.shape[0])
    return result
