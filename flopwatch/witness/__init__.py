"""`flopwatch witness`: a small tlog-witness anyone can run to cosign collectors' checkpoints.

state.py    the size, root and cosigned checkpoint kept per log (SQLite, durable)
service.py  the add-checkpoint checks and the HTTP handler
"""
