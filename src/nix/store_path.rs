//! Store path parsing. STUB: replaced by the full reader.
