//! The single integration test binary: each module is one area.

mod drv_corpus;
