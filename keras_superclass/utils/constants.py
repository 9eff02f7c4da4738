"""Constants shared by the data pipeline, the layers and the tools.

Plain Python (no Keras, TensorFlow or NumPy), so any module can import it.
"""

# OpenAI CLIP pixel statistics (per RGB channel, of [0, 1] pixels): the
# normalisation of the reference's image transforms.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# Image files the readers and the shard writer pick up (lower case; compare
# with `name.lower().endswith(IMAGE_EXTENSIONS)`).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
