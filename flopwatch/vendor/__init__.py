"""Third-party APIs flopwatch speaks: code generated from proto/ (see proto/generate.py)."""
