//! Ingest: moving new spool lines into the ledger. STUB.
