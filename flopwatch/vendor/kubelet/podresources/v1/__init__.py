"""PodResources API v1: generated from proto/flopwatch/vendor/kubelet/podresources/v1/."""
