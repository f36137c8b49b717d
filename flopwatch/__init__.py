"""flopwatch: signed, verifiable FLOP attestations for GPU jobs from hardware counters.

The `flopwatch` package is the code the agent, the collector and the offline verifier share:
the envelope (DSSE/Ed25519), the hash chain, the FLOP model and the errors. The node agent lives
in the top-level `agent` package, the collector in `collector`.
"""

__version__ = "0.1.0"
