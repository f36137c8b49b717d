"""PodResources API."""
