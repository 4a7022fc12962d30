//! econtext
