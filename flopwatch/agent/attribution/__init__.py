"""Job attribution on the node: which job did the work measured on each GPU.

  base.py          the source interface and the attributor that combines the sources
  registry.py      jobs registered by hand or by scheduler hooks (`flopwatch job start|end`)
  slurm.py         Slurm jobs of GPU processes (cgroup, else SLURM_JOB_ID)
  kubernetes.py    pods holding GPUs (kubelet PodResources API) and pods of processes (cgroup),
                   with their runs and accounts
  podresources.py  the kubelet PodResources API client
  kubemeta.py      pods' runs and namespaces' accounts from the API server (list, watch, cache)
  kubeowners.py    a pod's top controller through ownerReferences (JobSet, PyTorchJob ...)
  kubeapi.py       the Kubernetes API client (plain HTTPS, service account, bounded)
  jobs_file.py     fixed windows from a JOBS.json file (replay, demo)
  procfs.py        reading /proc/PID
  assemble.py      which sources an agent runs

How the windows of all sources split an interval (precedence) is flopwatch/attribution.py.
"""
