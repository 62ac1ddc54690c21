//! Writing build records. STUB.
