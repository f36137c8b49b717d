"""The agent's local control socket: `flopwatch job start|end|list` (server.py in the agent,
client.py in the command line and the Slurm prolog and epilog).
"""
