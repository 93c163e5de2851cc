"""The pipeline core: stage registry, config, manifests and atomic publishing, the runner behind ./run.sh."""
