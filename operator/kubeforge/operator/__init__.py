"""The Kopf operator: handlers, reconcile logic, pure builders of Kubernetes objects."""
