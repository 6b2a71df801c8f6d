"""An example custom Kubeforge trainer: a tiny CNN classifier (see docs/custom-models.md)."""
