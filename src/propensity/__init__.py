"""propensity: daily e-commerce propensity predictions from event histories."""

__version__ = "0.1.0"
