"""The numbered pipeline stages: shared config, manifests and atomic publishing."""
