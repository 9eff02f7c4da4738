"""Pretrain SuperClass with the Python API on your own shards.

    KERAS_BACKEND=jax python examples/pretrain_superclass.py \
        --train 'shards/train-*.tfrecord' --preset superclass_vit_s16 \
        --steps 1000 --batch-size 64 --out my_superclass

Writes a keras-hub preset (weights, config, IDF statistics, tokenizer) that
`keras_hub.models.Backbone.from_preset(out)` loads after
`import keras_superclass`. For long runs with checkpoints and resume, use
`keras-superclass train --config ...` instead.
"""

import argparse

import keras

from keras_superclass.data import image_text_dataset
from keras_superclass.data.tokenizers import get_tokenizer
from keras_superclass.models import SuperClassClassifier


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", required=True, help="TFRecord glob")
    parser.add_argument("--preset", default="superclass_vit_s16")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--out", required=True, help="preset directory")
    args = parser.parse_args()

    tokenizer = get_tokenizer("clip")
    model = SuperClassClassifier.from_preset(
        args.preset,
        vocabulary_size=tokenizer.vocabulary_size(),
        ignore_ids=tokenizer.special_token_ids,
        image_shape=(args.image_size, args.image_size, 3),
    )
    model.compile(total_steps=args.steps, warmup_steps=args.steps // 20)
    data = image_text_dataset(
        args.train,
        batch_size=args.batch_size,
        image_size=args.image_size,
        tokenizer=tokenizer,
        seed=0,
        repeat=True,
    )
    epochs = 10
    model.fit(data, epochs=epochs, steps_per_epoch=args.steps // epochs)
    model.save_to_preset(args.out)
    tokenizer.save_to_preset(args.out)
    print(f"Saved to {args.out} ({keras.config.backend()} backend)")


if __name__ == "__main__":
    main()
