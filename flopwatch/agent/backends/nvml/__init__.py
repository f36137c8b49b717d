"""The real GPU backend, on NVML through nvidia-ml-py.

backend.py      NvmlBackend: one reading per measured device per interval
lib.py          the one entry point to the pynvml module (lazy init, "not supported" is None)
gpm.py          GPM pipe activity of one device (whole GPU or MIG instance)
clock.py        the SM clock, polled at about 10 Hz and integrated
utilization.py  kernel-busy time bounded from utilization samples (GPUs without GPM)
mig.py          MIG instances of a GPU, each measured as a device
processes.py    the processes running on a device, impossible pids dropped
cc.py           confidential-computing attestation reports
ids.py          GPM metric ids and SM geometry, shared with the replay backend
"""
