"""Evaluation: linear probe, kNN, few-shot; zero-shot and retrieval."""

from keras_superclass.evaluation.features import FeatureExtractor
from keras_superclass.evaluation.features import extract_features
from keras_superclass.evaluation.few_shot import RidgeClassifier
from keras_superclass.evaluation.few_shot import few_shot_accuracy
from keras_superclass.evaluation.knn import knn_accuracy
from keras_superclass.evaluation.knn import knn_predict
from keras_superclass.evaluation.linear_probe import build_linear_probe
from keras_superclass.evaluation.linear_probe import linear_probe
from keras_superclass.evaluation.linear_probe import top_k_accuracy
from keras_superclass.evaluation.results import evaluate_encoder
from keras_superclass.evaluation.results import evaluate_features
from keras_superclass.evaluation.results import format_results_table
from keras_superclass.evaluation.results import write_results
from keras_superclass.evaluation.retrieval import evaluate_retrieval
from keras_superclass.evaluation.retrieval import retrieval_recall
from keras_superclass.evaluation.zero_shot import class_text_embeddings
from keras_superclass.evaluation.zero_shot import load_templates
from keras_superclass.evaluation.zero_shot import zero_shot_classify
