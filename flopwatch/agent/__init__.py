"""The flopwatch node agent: sample GPU counters, attribute them to jobs, sign, spool, send."""
