"""The kubelet's APIs (Kubernetes, Apache-2.0)."""
