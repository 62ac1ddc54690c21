//! Helpers shared by the integration tests. STUB.
