"""flopwatch: signed, verifiable FLOP attestations for GPU jobs from hardware counters.

One package, in layers (checked by `make lint`):

    cli/          the `flopwatch` command line; imports everything below it
    agent/        the node agent: sample GPUs, attribute, sign, spool, send
    collector/    the collector: verify, total, alert, keep the transparency log
    the core      everything else: the envelope (dsse), chains, intervals, the FLOP model
                  (model/), verification (verify/), Merkle proofs, statements, errors, limits,
                  generated protobuf (v1/); shared by both and by the offline verifier, and
                  importing neither
"""

__version__ = "0.1.0"
