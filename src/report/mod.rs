//! Reports over the ledger. STUB.
