//! Static analytics of a definition (placeholder, filled by the analytics work).
