"""CatLIP's Transfer Init: start a downstream classifier from synset rows.

Each downstream class name is mapped to synsets of the pre-training
vocabulary through WordNet: an exact match first (a noun sense of the name
that is in the vocabulary), otherwise every vocabulary synset whose path
similarity to the name's first noun sense reaches a threshold. The new
classifier's column of a class is the mean of the matched columns of the
pretrained synset classifier (kernel and bias); unmatched classes get a
fresh random initialisation. corenet does not implement this; it follows
the CatLIP paper.
"""

import collections

import numpy as np

from keras_superclass.data.synsets import SynsetVocabulary
from keras_superclass.data.synsets import _wordnet
from keras_superclass.data.synsets import synset_key

DEFAULT_THRESHOLD = 0.5


def _synset_of_key(wordnet, key):
    return wordnet.synset_from_pos_and_offset(key[0], int(key[1:]))


def _class_synsets(wordnet, class_name):
    """Noun synsets a class name may denote, most frequent sense first.

    Accepts WordNet ids (`"n02084071"`, `"n2084071"`), synset names
    (`"dog.n.01"`) and plain names; a comma-separated list of aliases
    (ImageNet style, `"tench, Tinca tinca"`) is tried alias by alias.
    """
    name = str(class_name).strip()
    if len(name) > 1 and name[0] == "n" and name[1:].isdigit():
        try:
            return [_synset_of_key(wordnet, name)]
        except Exception:
            return []
    if name.count(".") == 2 and ".n." in name:
        try:
            return [wordnet.synset(name)]
        except Exception:
            return []
    found = []
    for alias in name.split(","):
        alias = "_".join(alias.strip().lower().split())
        if not alias:
            continue
        for synset in wordnet.synsets(alias, pos="n"):
            if synset not in found:
                found.append(synset)
    return found


def _neighbourhood(synset, radius):
    """Synsets within `radius` hypernym/hyponym edges (undirected)."""
    seen = {synset: 0}
    queue = collections.deque([synset])
    while queue:
        node = queue.popleft()
        depth = seen[node]
        if depth == radius:
            continue
        for nxt in (
            node.hypernyms()
            + node.instance_hypernyms()
            + node.hyponyms()
            + node.instance_hyponyms()
        ):
            if nxt not in seen:
                seen[nxt] = depth + 1
                queue.append(nxt)
    return seen


def match_classes_to_synsets(
    class_names, vocabulary, threshold=DEFAULT_THRESHOLD
):
    """Maps downstream class names to vocabulary synsets.

    Per class: if a noun sense of the name is in the vocabulary, the first
    such sense (WordNet orders senses by frequency) is the match, with
    similarity 1. Otherwise every vocabulary synset whose
    `path_similarity` to the name's first noun sense is `>= threshold`
    matches. Path similarity is `1 / (1 + shortest hypernym path)`, so
    candidates are searched within `1 / threshold - 1` edges.

    Args:
        class_names: downstream class names (or WordNet ids / synset names).
        vocabulary: a `SynsetVocabulary` or the path of its JSON file.
        threshold: minimum path similarity in `(0, 1]`.

    Returns:
        One dict per class: `class_index`, `class_name`, `synset` (the name
        of the class's synset or None), `method` (`"exact"`, `"path"` or
        `"none"`) and `matches`, a list of `{"index", "key", "lemma",
        "similarity"}` sorted by decreasing similarity.

    Example:
    >>> vocab = SynsetVocabulary(["n2084071"])  # dog
    >>> match_classes_to_synsets(["dog", "puppy"], vocab)[1]["method"]
    'path'
    """
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(
            f"`threshold` is a path similarity in (0, 1], got {threshold}."
        )
    if not isinstance(vocabulary, SynsetVocabulary):
        vocabulary = SynsetVocabulary.load(vocabulary)
    wordnet, _ = _wordnet()
    lemmas = vocabulary.lemmas
    radius = int(np.floor(1.0 / float(threshold) - 1.0 + 1e-9))
    report = []
    for class_index, class_name in enumerate(class_names):
        candidates = _class_synsets(wordnet, class_name)
        entry = {
            "class_index": class_index,
            "class_name": class_name,
            "synset": candidates[0].name() if candidates else None,
            "method": "none",
            "matches": [],
        }
        exact = [s for s in candidates if synset_key(s) in vocabulary]
        if exact:
            key = synset_key(exact[0])
            index = vocabulary.lookup(key)
            entry["synset"] = exact[0].name()
            entry["method"] = "exact"
            entry["matches"] = [
                {
                    "index": index,
                    "key": key,
                    "lemma": lemmas[index],
                    "similarity": 1.0,
                }
            ]
        elif candidates:
            source = candidates[0]
            matches = []
            for synset in _neighbourhood(source, radius):
                key = synset_key(synset)
                if key not in vocabulary:
                    continue
                similarity = source.path_similarity(synset)
                if similarity is not None and similarity >= threshold:
                    index = vocabulary.lookup(key)
                    matches.append(
                        {
                            "index": index,
                            "key": key,
                            "lemma": lemmas[index],
                            "similarity": float(similarity),
                        }
                    )
            matches.sort(key=lambda m: (-m["similarity"], m["index"]))
            if matches:
                entry["method"] = "path"
                entry["matches"] = matches
        report.append(entry)
    return report


def _classifier_weights(pretrained):
    """`(kernel (D, V), bias (V,))` of a task, a `TokenHead` or a Dense."""
    layer = pretrained
    if hasattr(layer, "token_head"):
        layer = layer.token_head
    if hasattr(layer, "classifier"):
        layer = layer.classifier
    kernel = getattr(layer, "kernel", None)
    if kernel is None or len(kernel.shape) != 2:
        raise ValueError(
            "Transfer Init needs a pretrained synset classifier: a "
            "`CatLIPClassifier` / `SuperClassClassifier`, its `TokenHead`, or "
            f"a Dense layer; got {type(pretrained).__name__}."
        )
    import keras

    kernel = np.asarray(keras.ops.convert_to_numpy(kernel), dtype="float32")
    if getattr(layer, "bias", None) is not None:
        bias = np.asarray(keras.ops.convert_to_numpy(layer.bias), "float32")
    else:
        bias = np.zeros((kernel.shape[1],), dtype="float32")
    return kernel, bias


def transfer_init_classifier(
    pretrained_task,
    class_names,
    vocabulary,
    threshold=DEFAULT_THRESHOLD,
    seed=None,
):
    """Transfer Init of a downstream classifier from a synset classifier.

    Args:
        pretrained_task: a trained `CatLIPClassifier` (or its `TokenHead`,
            or the classifier `Dense`), whose classes are `vocabulary`.
        class_names: the downstream class names, in class order.
        vocabulary: the `SynsetVocabulary` of the pretrained head (or path).
        threshold: minimum WordNet path similarity of a match.
        seed: seed of the random init of unmatched classes, which follows
            the head's own init: `normal(std=D**-0.5)` kernel, zero bias.

    Returns:
        `(kernel (D, C), bias (C,), report)`: float32 arrays to load into the
        downstream Dense, which reads what the pretrained classifier read
        (`task.token_head.classifier_inputs(pooled_features)`: the head's
        LayerNorm kept), and the `match_classes_to_synsets` report of every
        class.

    Example:
    >>> vocab = SynsetVocabulary(["n2084071"])  # dog
    >>> pretrained = keras.layers.Dense(1)  # or a trained CatLIPClassifier
    >>> pretrained.build((None, 8))
    >>> kernel, bias, report = transfer_init_classifier(
    ...     pretrained, ["dog", "cat"], vocab, seed=0
    ... )
    >>> kernel.shape, bias.shape
    ((8, 2), (2,))
    >>> [len(entry["matches"]) for entry in report]
    [1, 0]
    >>> new_head = keras.layers.Dense(2)
    >>> new_head.build((None, 8))
    >>> new_head.set_weights([kernel, bias])
    """
    if not isinstance(vocabulary, SynsetVocabulary):
        vocabulary = SynsetVocabulary.load(vocabulary)
    kernel, bias = _classifier_weights(pretrained_task)
    width, num_synsets = kernel.shape
    if num_synsets != len(vocabulary):
        raise ValueError(
            f"The pretrained classifier has {num_synsets} classes but the "
            f"vocabulary has {len(vocabulary)} synsets; pass the vocabulary "
            f"the model was trained with."
        )
    report = match_classes_to_synsets(class_names, vocabulary, threshold)
    rng = np.random.default_rng(seed)
    new_kernel = (
        rng.standard_normal((width, len(report))) * width**-0.5
    ).astype("float32")
    new_bias = np.zeros((len(report),), dtype="float32")
    for entry in report:
        indices = [m["index"] for m in entry["matches"]]
        if indices:
            column = entry["class_index"]
            new_kernel[:, column] = kernel[:, indices].mean(axis=1)
            new_bias[column] = bias[indices].mean()
    return new_kernel, new_bias, report
