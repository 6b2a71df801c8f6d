"""The reconcile core both runtimes drive: references to run specs, step results to statuses.

The local runner (`kubeforge.local`) and the operator (`kubeforge.operator`) each give the core a
lookup of other resources (the state directory; the API server) and apply what it returns; neither
imports the other. See docs/architecture.md for who calls what.
"""
