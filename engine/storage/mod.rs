//! Object storage behind one small trait, with S3 and local-filesystem implementations.
