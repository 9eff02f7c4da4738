"""The SuperClass loss: IDF-weighted softmax cross-entropy over tokens."""

import json
import os

import keras
import numpy as np
from keras import ops

from keras_superclass.layers.idf_statistics import IDFStatistics
from keras_superclass.losses.multilabel_loss import MultiLabelLoss

IDF_MODES = ("online", "fixed", "none")


def fixed_idf_weights(document_frequencies, num_documents):
    """Paper Eq. 2: `w_c = log(|D| / (1 + df(c)))`, as float32 NumPy."""
    df = np.asarray(document_frequencies, dtype=np.float64)
    return np.log(float(num_documents) / (1.0 + df)).astype("float32")


def load_document_frequencies(path):
    """Reads a document-frequency table written by the data tools.

    Accepts JSON `{"num_documents": N, "document_frequencies": [...]}` (or
    the key `"df"`) or NPZ with arrays `df` and `num_documents`.

    Returns:
        `(document_frequencies, num_documents)`.
    """
    path = os.fspath(path)
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            return data["df"], int(data["num_documents"])
    with open(path, encoding="utf-8") as f:
        table = json.load(f)
    df = table.get("document_frequencies", table.get("df"))
    if df is None or "num_documents" not in table:
        raise ValueError(
            f"{path} is not a document-frequency table: it needs the keys "
            f"'num_documents' and 'document_frequencies' (or 'df')."
        )
    return np.asarray(df), int(table["num_documents"])


@keras.saving.register_keras_serializable(package="keras_superclass")
class SuperClassLoss(MultiLabelLoss):
    """IDF-weighted softmax cross-entropy over the caption's token set.

    For multi-hot labels `y` and IDF weights `w`, targets are
    `t = y * w / max(||y * w||_1, 1e-12)` and the per-sample loss is
    `-sum_c t_c * log_softmax(logits)_c`, in float32.

    IDF modes:
    - `"online"`: the reference running statistics (see `IDFStatistics`):
      each training step first adds the batch, then weights with
      `log((n + 1/B) / (cap_fq + 1/B))`. The statistics are model state:
      `SuperClassClassifier.compile()` binds its own `IDFStatistics`, so
      they are saved with checkpoints and presets. A standalone loss makes
      its own and updates on every call.
    - `"fixed"`: `log(|D| / (1 + df))` from a document-frequency table.
    - `"none"`: all weights 1 (plain multi-label softmax).

    Args:
        vocabulary_size: number of classes `V`.
        idf: `"online"`, `"fixed"` or `"none"`.
        document_frequencies: for `"fixed"`, `(V,)` counts or the path of a
            table from `keras-superclass df`.
        num_documents: for `"fixed"` with counts, the number of captions.
        pad_id: padding value of id labels.
        ignore_ids: ids that never become targets (special tokens).
        label_format: `"auto"`, `"ids"` or `"multi_hot"`.

    Example:
    >>> loss = SuperClassLoss(vocabulary_size=8, idf="none")
    >>> ids = np.array([[1, 3, -1]])
    >>> round(float(loss(ids, np.zeros((1, 8)))), 4)  # log(8)
    2.0794
    """

    def __init__(
        self,
        vocabulary_size,
        idf="online",
        document_frequencies=None,
        num_documents=None,
        pad_id=-1,
        ignore_ids=None,
        label_format="auto",
        reduction="sum_over_batch_size",
        name="superclass_loss",
        dtype=None,
    ):
        super().__init__(
            vocabulary_size,
            pad_id=pad_id,
            ignore_ids=ignore_ids,
            label_format=label_format,
            reduction=reduction,
            name=name,
            dtype=dtype,
        )
        if idf not in IDF_MODES:
            raise ValueError(f"`idf` must be one of {IDF_MODES}, got {idf!r}.")
        self.idf = idf
        self.statistics = None
        self.fixed_weights = None
        self._document_frequencies_arg = document_frequencies
        self._num_documents_arg = num_documents
        if idf == "fixed":
            if document_frequencies is None:
                raise ValueError(
                    "`idf='fixed'` needs `document_frequencies`: a table "
                    "written by `keras-superclass df` or an array with "
                    "`num_documents`."
                )
            if isinstance(document_frequencies, str | os.PathLike):
                df, num_documents = load_document_frequencies(
                    document_frequencies
                )
            else:
                df = np.asarray(document_frequencies)
                if num_documents is None:
                    raise ValueError(
                        "`num_documents` is required with an array of "
                        "document frequencies."
                    )
            if df.shape != (self.vocabulary_size,):
                raise ValueError(
                    f"The document-frequency table has shape {df.shape} but "
                    f"the vocabulary has {self.vocabulary_size} entries. "
                    f"Recompute it with the same tokenizer."
                )
            self.fixed_weights = fixed_idf_weights(df, num_documents)
        elif idf == "online":
            self.statistics = IDFStatistics(
                self.vocabulary_size, name="idf_statistics"
            )

    def bind_statistics(self, statistics):
        """Uses `statistics` (e.g. a model's) for the online IDF."""
        if statistics.vocabulary_size != self.vocabulary_size:
            raise ValueError(
                f"IDF statistics cover {statistics.vocabulary_size} classes "
                f"but the loss has {self.vocabulary_size}."
            )
        self.statistics = statistics

    def class_weights(self, multi_hot):
        """The `(V,)` IDF weight of every class for this batch."""
        if self.idf == "online":
            return self.statistics.update_and_weights(multi_hot)
        if self.idf == "fixed":
            return ops.convert_to_tensor(self.fixed_weights)
        return ops.ones((self.vocabulary_size,), dtype="float32")

    def compute_per_sample(self, multi_hot, logits):
        weights = self.class_weights(multi_hot)
        targets = multi_hot * weights
        norm = ops.sum(ops.abs(targets), axis=-1, keepdims=True)
        targets = targets / ops.maximum(norm, 1e-12)
        log_probs = ops.log_softmax(logits, axis=-1)
        return -ops.sum(targets * log_probs, axis=-1)

    def get_config(self):
        config = super().get_config()
        df = self._document_frequencies_arg
        if df is not None and not isinstance(df, str | os.PathLike):
            df = np.asarray(df).tolist()
        config.update(
            idf=self.idf,
            document_frequencies=None
            if df is None
            else os.fspath(df)
            if isinstance(df, str | os.PathLike)
            else df,
            num_documents=self._num_documents_arg,
        )
        return config
