//! econtext-actors
