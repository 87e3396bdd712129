//! Milvus connector: our own protocol subset compiled by tonic, and a client over it.
