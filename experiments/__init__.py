"""The paper's experiments and pictures, one `python -m experiments.NAME` command each
(experiments/README.md)."""
