"""raylung: train and tune cancer-vs-non-cancer classifiers on lung pathology images.

Implements the attention ResNet of Kim & Kang (2023), "A Study on the Classification of
Cancers with Lung Cancer Pathological Images Using Deep Neural Networks and Self-Attention
Structures", and tunes it at scale with Ray Train, Ray Tune, Optuna and Weights & Biases.
"""

__version__ = "0.1.0"
