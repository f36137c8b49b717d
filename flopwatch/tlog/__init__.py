"""The transparency log in the open C2SP formats, pure and I/O-free.

note.py         signed notes (c2sp.org/signed-note): Ed25519 note keys, key ids, vkeys
checkpoint.py   checkpoints (c2sp.org/tlog-checkpoint): origin, size, RFC 6962 root
cosignature.py  cosignature/v1 timestamped Ed25519 cosignatures (c2sp.org/tlog-cosignature)
tiles.py        tile paths, a tree's tiles, tile and entry-bundle encoding (c2sp.org/tlog-tiles)
policy.py       witness policies (c2sp.org/tlog-policy): witnesses, groups, k-of-n quorum
witness.py      add-checkpoint requests and the witness's checks (c2sp.org/tlog-witness)
"""
