"""Backup and restore of a whole deployment: artifacts, registries, audit checkpoints and the store.

A backup is one folder (``<DEST>/<UTC stamp>/``)::

    manifest.json                    every file below with its sha256 and size, the audit chain's
                                     head in the snapshot, the models and labels; signed (Ed25519)
                                     when BACKUP_SIGNING_KEY_FILE is set
    artifacts/<model>/<version>/...  verified versions only (hashes, and signatures when trusted keys
                                     are configured, checked on the copied bytes)
    artifacts/<model>/registry.json, .registry.last-good.json
    audit-checkpoints.jsonl          the checkpoints that cover the snapshot's chain
    store/predictions.db             SQLite: the online backup API's copy (one file, no WAL), or
    store/store.pgdump               PostgreSQL: ``pg_dump --format=custom``
    secrets/...                      API keys files and PII_HASH_KEY, only with ``--include-secrets``

Consistency: every registry change records its audit anchor in the store and then writes
registry.json, both under the model's registry lock (``registry.commit``). The backup takes every
model's lock, pins a snapshot of the store (a read transaction on SQLite, an exported snapshot on
PostgreSQL), copies the registries, and lets go: the locks are held for milliseconds, not for the
store copy, which then reads the pinned snapshot while serving goes on. Which registry.json the
snapshot's chain anchors is therefore exactly the file copied.

``take`` makes a backup, ``restore`` puts one back; ``manifest`` checks one, ``pinned`` copies the
store, ``tables`` moves a SQLite snapshot into another backend. No Flask.
"""
