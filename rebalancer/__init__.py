"""pod-rebalancer: verify a skew alert against live metrics, then rebalance the outlier pods."""
