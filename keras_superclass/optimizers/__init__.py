from keras_superclass.optimizers.adamw import AdamW
