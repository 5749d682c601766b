"""Which events move the model's predictions: shared by `explain` and the monitoring report.

integrated_gradients  running predictions, integrated gradients and leave-one-out on the inputs
summary               the global summary of a sampled day (`global_summary`) and its sampling
render                the summary as a plot, a terminal table and an HTML fragment

Modules import torch at their top: import them inside functions where start-up time matters.
"""
