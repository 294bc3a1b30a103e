"""pod-rebalancer: verify a skew alert against live metrics, then rebalance the outlier pods."""

__version__ = "0.5.0"
