"""The end-to-end CPU demo (`keras-superclass demo`)."""

from keras_superclass.demo.pipeline import run_demo
