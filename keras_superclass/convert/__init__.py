"""Converters from reference (OpenCLIP / SuperClass) PyTorch checkpoints."""

from keras_superclass.convert.files import read_state_dict
from keras_superclass.convert.openclip import infer_vocabulary_size
from keras_superclass.convert.openclip import load_reference_weights
from keras_superclass.convert.openclip import normalize_state_dict
from keras_superclass.convert.openclip_clip import describe_clip
from keras_superclass.convert.openclip_clip import (
    image_text_model_from_openclip,
)
from keras_superclass.convert.openclip_clip import load_clip_weights
from keras_superclass.convert.report import ConversionReport
