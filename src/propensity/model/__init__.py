"""The model kernel every stage that touches the model shares (training, scoring, monitoring,
explanations, the registry), so that those stages meet only through the data they write.

batches   the feature spec, histories encoded to flat arrays, padded batches, length buckets
network   the LSTM (`PropensityModel`)
labels    the labels of the targets from a later snapshot
stats     mergeable input and score statistics: scoring's manifest and the drift reference

Modules import torch at their top: import them inside functions where start-up time matters.
"""
