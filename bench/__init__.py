"""The benchmark suite: capacity, latency and join time of the media Worker and baselines."""
