//! econtext-bootstrap
