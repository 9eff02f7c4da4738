"""Converters from reference (OpenCLIP / SuperClass) PyTorch checkpoints."""

from keras_superclass.convert.files import read_state_dict
from keras_superclass.convert.openclip import ConversionReport
from keras_superclass.convert.openclip import infer_vocabulary_size
from keras_superclass.convert.openclip import load_reference_weights
from keras_superclass.convert.openclip import normalize_state_dict
