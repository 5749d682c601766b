"""Explanations: which events moved a profile's prediction (docs/explain.md).

lookup    a few profiles of histories(D) by id, the top of predictions(D)
profile   one explanation per profile, as JSON-ready dicts (methods in `propensity.attribution`)
render    terminal tables, PNG plots and HTML pages of profile explanations
commands  `propensity explain`

Modules import torch at their top: import them inside functions where start-up time matters.
"""
