"""Explanations: which events moved a profile's prediction (docs/explain.md).

attribution  running predictions, integrated gradients and leave-one-out on the model's inputs
lookup       a few profiles of histories(D), the top of predictions(D), a sample for summaries
profile      one explanation per profile, as JSON-ready dicts
summary      the global attribution summary (`global_summary`), for the monitoring report
render       terminal tables, PNG plots, HTML pages and the report fragment (`summary_html`)
commands     `propensity explain`

Modules import torch at their top: import them inside functions where start-up time matters.
"""
