//! planrun: declarative migration plans for Milvus, compiled into a DAG, previewed, run and resumed.
