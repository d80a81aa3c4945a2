"""The study: its config and scales, the method registry, pre-trained parties per scenario, the runner (one job, key
and claim loop, Ray when asked), the append-only results store, and the statistics and findings read from it."""
