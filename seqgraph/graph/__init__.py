"""The folded graph (a model's equations), its checks, and its unfolding."""
